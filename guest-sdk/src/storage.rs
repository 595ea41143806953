//! Objects under the task's output prefix (contract 1.1.0): whether
//! something is there, and files moved there from an SSH host by the host
//! itself, in the background, never through the connector's memory.
//!
//! The host reaches only URIs under the output prefix of the request being
//! served, in stores its manifest's `[storage]` section and the pod's
//! credentials allow.
//!
//! ```no_run
//! use flyte_connector_sdk::{prelude::*, ssh::Session, storage::{self, Transfer}};
//!
//! /// Whether the job's result is in object storage yet.
//! fn collect(session: &Session, ctx: &Context) -> Result<Resource, Error> {
//!     let uri = format!("{}/model", ctx.output_prefix().trim_end_matches('/'));
//!     match storage::copy_from_ssh(session, "/scratch/job/model.bin", &uri, None)? {
//!         Transfer::Done(_) => Ok(Resource::succeeded()),
//!         Transfer::Moving { moved, total } => {
//!             Ok(Resource::running().message(format!("moved {moved} of {total} bytes")))
//!         }
//!         Transfer::Missing => Ok(Resource::failed("the job wrote no model")),
//!         Transfer::TooLarge(bytes) => Ok(Resource::failed(format!("{bytes} bytes is too many"))),
//!         Transfer::Failed(why) => Err(Error::retryable(why)),
//!     }
//! }
//! ```

use std::fmt;

use crate::{__private::bindings::flyte::connector::storage as wit, Error, ssh::Session};

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// Not under the task's output prefix, or a store the manifest does not
    /// let the connector reach.
    NotAllowed(String),
    /// The store could not be reached or answered an error.
    Unavailable(String),
    /// A malformed URI, or a source that cannot be read.
    Invalid(String),
}

impl StorageError {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::NotAllowed(m) | Self::Unavailable(m) | Self::Invalid(m) => m,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for StorageError {}

impl From<wit::Error> for StorageError {
    fn from(error: wit::Error) -> Self {
        match error {
            wit::Error::NotAllowed(m) => Self::NotAllowed(m),
            wit::Error::Unavailable(m) => Self::Unavailable(m),
            wit::Error::Invalid(m) => Self::Invalid(m),
        }
    }
}

/// An unavailable store is retryable (the client polls again); the others
/// fail the call.
impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Unavailable(m) => Error::Retryable(m),
            other => Error::Failed(other.to_string()),
        }
    }
}

/// Where a transfer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// This server is moving it: bytes moved so far, of the total.
    Moving {
        /// Moved so far.
        moved: u64,
        /// The source's bytes.
        total: u64,
    },
    /// Complete at the URI, with this many bytes.
    Done(u64),
    /// Nothing at the source path (or an empty directory).
    Missing,
    /// The source's bytes, at or over the limit asked; nothing was moved.
    TooLarge(u64),
    /// The last attempt failed, why; the next call starts anew.
    Failed(String),
}

/// Whether anything is at `uri`: an object, or objects under it.
pub fn exists(uri: &str) -> Result<bool, StorageError> {
    Ok(wit::exists(uri)?)
}

/// Moves the file or directory at `path` on `session`'s host to `uri` (a
/// directory's files to `uri/RELATIVE`), refusing sources of `max_bytes`
/// or more. The first call starts the transfer; call again (from a later
/// poll) to learn how far it is. A destination already complete answers
/// [`Transfer::Done`] without moving anything.
pub fn copy_from_ssh(
    session: &Session,
    path: &str,
    uri: &str,
    max_bytes: Option<u64>,
) -> Result<Transfer, StorageError> {
    let options = wit::TransferOptions { max_bytes };
    Ok(
        match wit::copy_from_ssh(session.handle(), path, uri, options)? {
            wit::TransferState::Moving(progress) => Transfer::Moving {
                moved: progress.moved,
                total: progress.total,
            },
            wit::TransferState::Done(bytes) => Transfer::Done(bytes),
            wit::TransferState::Missing => Transfer::Missing,
            wit::TransferState::TooLarge(bytes) => Transfer::TooLarge(bytes),
            wit::TransferState::Failed(why) => Transfer::Failed(why),
        },
    )
}
