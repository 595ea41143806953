//! A session's files as another capability reads them outside a call: the
//! storage capability moves a job's outputs from here in the background,
//! leasing the plugin's pooled connections as the session's calls do.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    SshGranted,
    error::SshError,
    operations::{self, FileInfo},
    pool::{Destination, Lease},
};

/// Most files a directory may hold to be moved.
const MAX_FILES: usize = 100_000;
/// How deep a directory's folders may go.
const MAX_DEPTH: usize = 64;

/// The files of one session's host, as its identity reaches them.
#[derive(Clone)]
pub(in crate::runtime::capabilities) struct RemoteFiles {
    pub(super) destination: Destination,
    pub(super) granted: Arc<SshGranted>,
    pub(super) connector: Arc<str>,
}

/// What is at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::runtime::capabilities) enum Found {
    Nothing,
    /// A file of this many bytes.
    File(u64),
    /// A directory's files (recursively), by path relative to it, with
    /// their bytes, sorted.
    Directory(Vec<(String, u64)>),
}

/// A remote file being read; holds its channel of the pooled connection.
pub(in crate::runtime::capabilities) struct RemoteReader {
    pub(in crate::runtime::capabilities) file: russh_sftp::client::fs::File,
    _lease: Lease,
}

impl RemoteFiles {
    /// `user@host:port`.
    pub(in crate::runtime::capabilities) fn shown(&self) -> String {
        self.destination.shown()
    }

    async fn lease(&self, deadline: Instant) -> Result<Lease, SshError> {
        self.granted
            .pool
            .lease(&self.granted, &self.connector, &self.destination, deadline)
            .await
    }

    /// What is at `path`, a directory's files listed, by `deadline`.
    pub(in crate::runtime::capabilities) async fn find(
        &self,
        path: &str,
        deadline: Instant,
    ) -> Result<Found, SshError> {
        let lease = self.lease(deadline).await?;
        let shown = self.shown();
        let connection = &lease.connection;
        match operations::stat(connection, &shown, path, deadline).await? {
            None => Ok(Found::Nothing),
            Some(FileInfo {
                is_directory: false,
                size,
                ..
            }) => Ok(Found::File(size)),
            Some(_) => {
                let mut files = Vec::new();
                let mut folders = vec![(String::new(), 0)];
                while let Some((folder, depth)) = folders.pop() {
                    let at = if folder.is_empty() {
                        path.to_owned()
                    } else {
                        format!("{}/{folder}", path.trim_end_matches('/'))
                    };
                    for (name, info) in
                        operations::list_directory(connection, &shown, &at, deadline).await?
                    {
                        let relative = if folder.is_empty() {
                            name
                        } else {
                            format!("{folder}/{name}")
                        };
                        if info.is_directory {
                            if depth + 1 > MAX_DEPTH {
                                return Err(SshError::Invalid(format!(
                                    "{path} on {shown} is nested deeper than {MAX_DEPTH} folders"
                                )));
                            }
                            folders.push((relative, depth + 1));
                        } else {
                            files.push((relative, info.size));
                        }
                        if files.len() > MAX_FILES {
                            return Err(SshError::Invalid(format!(
                                "{path} on {shown} holds more than {MAX_FILES} files"
                            )));
                        }
                    }
                }
                files.sort();
                Ok(Found::Directory(files))
            }
        }
    }

    /// `path` opened for reading, on a channel of its own.
    pub(in crate::runtime::capabilities) async fn open(
        &self,
        path: &str,
        within: Duration,
    ) -> Result<RemoteReader, SshError> {
        let deadline = Instant::now() + within;
        let lease = self.lease(deadline).await?;
        let file = operations::open(&lease.connection, &self.shown(), path, deadline).await?;
        Ok(RemoteReader {
            file,
            _lease: lease,
        })
    }
}
