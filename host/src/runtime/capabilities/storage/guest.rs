//! The `flyte:connector/storage` interface as the guest imports it: its
//! bindings, and the host functions behind them. Every URI is judged
//! against the running call's output prefix before any store is reached.

use std::{sync::Arc, time::Instant};

use wasmtime::component::{Linker, Resource};

use super::{
    InstanceStorage, Storage, StorageError, StorageGranted,
    transfer::{self, Move, TransferState},
    uri::ObjectUri,
};
use crate::runtime::capabilities::{CapabilityView, HasState, ViewOf, ssh::Session, view_of};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "import flyte:connector/storage@1.3.0;",
        imports: { default: async | trappable },
        with: { "flyte:connector/ssh": crate::runtime::capabilities::ssh_interface },
    });
}

pub use self::generated::flyte::connector::storage as interface;
use self::interface as wit;

/// Adds the interface's imports to `linker`.
pub(super) fn add_to_linker<T: HasState<Storage>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    wit::add_to_linker::<T, ViewOf<Storage>>(linker, view_of::<Storage, T>)?;
    Ok(())
}

impl From<StorageError> for wit::Error {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotAllowed(m) => Self::NotAllowed(m),
            StorageError::Unavailable(m) => Self::Unavailable(m),
            StorageError::Invalid(m) => Self::Invalid(m),
        }
    }
}

impl From<TransferState> for wit::TransferState {
    fn from(state: TransferState) -> Self {
        match state {
            TransferState::Moving { moved, total } => {
                Self::Moving(wit::TransferProgress { moved, total })
            }
            TransferState::Done(bytes) => Self::Done(bytes),
            TransferState::Missing => Self::Missing,
            TransferState::TooLarge(bytes) => Self::TooLarge(bytes),
            TransferState::Failed(why) => Self::Failed(why),
        }
    }
}

impl CapabilityView<'_, InstanceStorage> {
    /// The grant, and `uri` parsed, if it is under the call's output prefix.
    fn admit(&self, uri: &str) -> Result<(Arc<StorageGranted>, ObjectUri), StorageError> {
        let granted = self.state.grant.0.clone().ok_or_else(|| {
            StorageError::NotAllowed(
                "this plugin may not use object storage: its manifest has no [storage] section"
                    .to_owned(),
            )
        })?;
        let prefix = self
            .state
            .call
            .as_ref()
            .and_then(|call| call.output_prefix.clone())
            .ok_or_else(|| {
                StorageError::NotAllowed(format!(
                    "{uri}: this call's request carries no output prefix, and a connector \
                     writes only under its task's"
                ))
            })?;
        let uri = ObjectUri::parse(uri)?;
        let prefix = ObjectUri::parse(&prefix)?;
        if !uri.is_under(&prefix) {
            return Err(StorageError::NotAllowed(format!(
                "{} is not under the task's output prefix {}",
                uri.text, prefix.text
            )));
        }
        Ok((granted, uri))
    }

    /// When the running call's time is up.
    fn deadline(&self) -> Instant {
        let far = Instant::now() + std::time::Duration::from_secs(crate::manifest::MAX_SECONDS);
        self.state
            .call
            .as_ref()
            .and_then(|call| call.deadline)
            .map_or(far, |deadline| deadline.min(far))
    }
}

impl wit::Host for CapabilityView<'_, InstanceStorage> {
    async fn exists(&mut self, uri: String) -> wasmtime::Result<Result<bool, wit::Error>> {
        let deadline = self.deadline();
        let admitted = self.admit(&uri);
        let outcome = async move {
            let (granted, uri) = admitted?;
            let located = granted.stores.locate(&uri)?;
            tokio::time::timeout_at(deadline.into(), transfer::exists(&located))
                .await
                .unwrap_or_else(|_| {
                    Err(StorageError::Unavailable(format!(
                        "{}: the store did not answer within the call's deadline",
                        uri.text
                    )))
                })
        }
        .await;
        Ok(outcome.map_err(wit::Error::from))
    }

    async fn copy_from_ssh(
        &mut self,
        source: Resource<Session>,
        path: String,
        uri: String,
        options: wit::TransferOptions,
    ) -> wasmtime::Result<Result<wit::TransferState, wit::Error>> {
        let files = self.table.get(&source)?.files();
        let deadline = self.deadline();
        let connector = Arc::clone(&self.state.connector);
        let admitted = self.admit(&uri);
        let outcome = async move {
            let (granted, uri) = admitted?;
            let asked = Move {
                files,
                path: &path,
                uri: &uri,
                max_bytes: options.max_bytes,
                connector: &connector,
            };
            granted
                .transfers
                .copy(&granted.stores, &granted.metrics, asked, deadline)
                .await
        }
        .await;
        Ok(outcome
            .map(wit::TransferState::from)
            .map_err(wit::Error::from))
    }
}
