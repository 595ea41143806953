//! The `flyte:connector/ssh` interface as the guest imports it: its
//! bindings, and the host functions behind them. A `session` resource holds
//! the checked destination; each operation leases a channel of a pooled
//! connection for its own duration, and is counted.

use std::{sync::Arc, time::Instant};

use tracing::Instrument as _;
use wasmtime::component::{Linker, Resource};

use super::{
    InstanceSsh, Ssh, SshGranted,
    error::SshError,
    files::RemoteFiles,
    known_hosts::KnownHosts,
    metrics::Operation,
    operations::{self, FileInfo},
    pool::{Destination, Identity, Lease},
};
use crate::runtime::capabilities::{CapabilityView, HasState, ViewOf, view_of};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "import flyte:connector/ssh@1.3.0;",
        imports: { default: async | trappable },
        with: { "flyte:connector/ssh.session": super::Session },
    });
}

pub use self::generated::flyte::connector::ssh as interface;
use self::interface as wit;

/// A guest's `session`: a destination whose key was read and whose host
/// the rules admit; connections are leased per operation.
pub struct Session {
    destination: Destination,
    granted: Arc<SshGranted>,
    connector: Arc<str>,
}

impl Session {
    /// Its host's files, for another capability to read outside the call.
    pub(in crate::runtime::capabilities) fn files(&self) -> RemoteFiles {
        RemoteFiles {
            destination: self.destination.clone(),
            granted: Arc::clone(&self.granted),
            connector: Arc::clone(&self.connector),
        }
    }
}

/// Adds the interface's imports to `linker`.
pub(super) fn add_to_linker<T: HasState<Ssh>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    wit::add_to_linker::<T, ViewOf<Ssh>>(linker, view_of::<Ssh, T>)?;
    Ok(())
}

impl From<SshError> for wit::Error {
    fn from(error: SshError) -> Self {
        match error {
            SshError::NotAllowed(m) => Self::NotAllowed(m),
            SshError::HostKey(m) => Self::HostKey(m),
            SshError::Authentication(m) => Self::Authentication(m),
            SshError::Unreachable(m) => Self::Unreachable(m),
            SshError::Timeout(m) => Self::Timeout(m),
            SshError::Remote(m) => Self::Remote(m),
            SshError::Invalid(m) => Self::Invalid(m),
        }
    }
}

impl From<FileInfo> for wit::FileInfo {
    fn from(info: FileInfo) -> Self {
        Self {
            size: info.size,
            is_directory: info.is_directory,
            mode: info.mode,
            modified: info.modified,
        }
    }
}

impl CapabilityView<'_, InstanceSsh> {
    /// The plugin's grant, or why there is none.
    fn granted(&self) -> Result<Arc<SshGranted>, SshError> {
        self.state.grant.0.clone().ok_or_else(|| {
            SshError::NotAllowed(
                "this plugin may not use SSH: its manifest has no [ssh] section".to_owned(),
            )
        })
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

    /// Checks `to` against the grant: its host admitted by a rule, its key
    /// readable, its known-hosts lines parsed.
    fn destination(
        &self,
        granted: &SshGranted,
        to: wit::Destination,
    ) -> Result<Destination, SshError> {
        let host = to
            .host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let shown = crate::runtime::capabilities::egress::authority(&host, to.port);
        if host.is_empty() || to.port == 0 || to.user.is_empty() {
            return Err(SshError::Invalid(format!(
                "an SSH destination needs a host, a port and a user (got {shown}, user {:?})",
                to.user
            )));
        }
        if !granted
            .rules
            .iter()
            .any(|rule| rule.allows("ssh", &host, to.port))
        {
            granted
                .metrics
                .denied(&self.state.connector, &shown, "rule");
            return Err(SshError::NotAllowed(format!(
                "SSH to {shown} is not allowed: no rule of the plugin's ssh.allowed_hosts \
                 admits it"
            )));
        }
        let key = russh::keys::decode_secret_key(&to.private_key, to.passphrase.as_deref())
            .map_err(|err| {
                SshError::Invalid(format!(
                    "the private key for {}@{shown} cannot be read: {}",
                    to.user,
                    key_error(&err)
                ))
            })?;
        let mut known_hosts = KnownHosts::default();
        known_hosts.add(&to.known_hosts);
        let identity = Identity::of(&[
            to.user.as_bytes(),
            host.as_bytes(),
            &to.port.to_be_bytes(),
            to.private_key.as_bytes(),
            to.passphrase.as_deref().unwrap_or_default().as_bytes(),
            to.known_hosts.as_bytes(),
        ]);
        Ok(Destination {
            host,
            port: to.port,
            user: to.user,
            key: Arc::new(key),
            known_hosts,
            identity,
        })
    }

    /// Runs `operation` on a leased channel of `session`'s destination,
    /// counting its outcome.
    async fn on_session<R>(
        &mut self,
        session: &Resource<Session>,
        operation: Operation,
        run: impl AsyncFnOnce(&Lease, &str, &SshGranted, Instant) -> Result<R, SshError>,
    ) -> wasmtime::Result<Result<R, wit::Error>> {
        let granted = match self.granted() {
            Ok(granted) => granted,
            Err(err) => return Ok(Err(err.into())),
        };
        let deadline = self.deadline();
        let connector = Arc::clone(&self.state.connector);
        let destination = &self.table.get(session)?.destination;
        let shown = destination.shown();
        // The command's text is not an attribute: it may carry what the
        // connector passes on its command line.
        let span = crate::trace_span!(
            "ssh",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            ssh.operation = operation.label(),
            server.address = %shown,
            outcome = tracing::field::Empty,
        );
        let outcome = async {
            let lease = granted
                .pool
                .lease(&granted, &connector, destination, deadline)
                .await?;
            run(&lease, &shown, &granted, deadline).await
        }
        .instrument(span.clone())
        .await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(err) => err.outcome(),
        };
        span.record("outcome", label);
        if outcome.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        granted
            .metrics
            .operation(&connector, &shown, operation, label);
        Ok(outcome.map_err(wit::Error::from))
    }
}

/// What is wrong with a key, without any of it.
fn key_error(err: &russh::keys::Error) -> String {
    match err {
        russh::keys::Error::KeyIsEncrypted => "it is encrypted and no passphrase was given".into(),
        _ => "it is not an OpenSSH or PEM private key, or its passphrase is wrong".into(),
    }
}

impl wit::Host for CapabilityView<'_, InstanceSsh> {
    async fn connect(
        &mut self,
        to: wit::Destination,
    ) -> wasmtime::Result<Result<Resource<Session>, wit::Error>> {
        let granted = match self.granted() {
            Ok(granted) => granted,
            Err(err) => return Ok(Err(err.into())),
        };
        let destination = match self.destination(&granted, to) {
            Ok(destination) => destination,
            Err(err) => return Ok(Err(err.into())),
        };
        // Connect now, so that a wrong key or host key fails here.
        let deadline = self.deadline();
        if let Err(err) = granted
            .pool
            .lease(&granted, &self.state.connector, &destination, deadline)
            .await
        {
            return Ok(Err(err.into()));
        }
        Ok(Ok(self.table.push(Session {
            destination,
            granted,
            connector: Arc::clone(&self.state.connector),
        })?))
    }
}

impl wit::HostSession for CapabilityView<'_, InstanceSsh> {
    async fn exec(
        &mut self,
        session: Resource<Session>,
        command: String,
        options: wit::ExecOptions,
    ) -> wasmtime::Result<Result<wit::ExecOutput, wit::Error>> {
        self.on_session(
            &session,
            Operation::Exec,
            async |lease, shown, granted, deadline| {
                let limit = granted.limits.command_timeout;
                let timeout = options
                    .timeout_ms
                    .map_or(limit, |ms| std::time::Duration::from_millis(ms).min(limit));
                let max_output =
                    options
                        .max_output_bytes
                        .map_or(granted.limits.max_output_bytes, |max| {
                            usize::try_from(max)
                                .unwrap_or(usize::MAX)
                                .min(granted.limits.max_output_bytes)
                        });
                let output = operations::exec(
                    &lease.connection,
                    shown,
                    &command,
                    &options.stdin,
                    max_output,
                    deadline.min(Instant::now() + timeout),
                    timeout.as_secs_f64(),
                )
                .await?;
                Ok(wit::ExecOutput {
                    exit_status: output.exit_status,
                    exit_signal: output.exit_signal,
                    stdout: output.stdout,
                    stderr: output.stderr,
                    truncated: output.truncated,
                })
            },
        )
        .await
    }

    async fn write_file(
        &mut self,
        session: Resource<Session>,
        path: String,
        contents: Vec<u8>,
        mode: u32,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        self.on_session(
            &session,
            Operation::WriteFile,
            async |lease, shown, granted, deadline| {
                if contents.len() > granted.limits.max_file_bytes {
                    return Err(SshError::Invalid(format!(
                        "{path}: {} bytes is more than the plugin's ssh.max_file_mb",
                        contents.len()
                    )));
                }
                operations::write_file(&lease.connection, shown, &path, &contents, mode, deadline)
                    .await
            },
        )
        .await
    }

    async fn read_file(
        &mut self,
        session: Resource<Session>,
        path: String,
        offset: u64,
        length: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::Error>> {
        self.on_session(
            &session,
            Operation::ReadFile,
            async |lease, shown, granted, deadline| {
                let length = usize::try_from(length)
                    .unwrap_or(usize::MAX)
                    .min(granted.limits.max_file_bytes);
                operations::read_file(&lease.connection, shown, &path, offset, length, deadline)
                    .await
            },
        )
        .await
    }

    async fn read_tail(
        &mut self,
        session: Resource<Session>,
        path: String,
        lines: u32,
        max_bytes: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::Error>> {
        self.on_session(
            &session,
            Operation::ReadTail,
            async |lease, shown, granted, deadline| {
                let max_bytes = usize::try_from(max_bytes)
                    .unwrap_or(usize::MAX)
                    .min(granted.limits.max_file_bytes);
                operations::read_tail(
                    &lease.connection,
                    shown,
                    &path,
                    lines as usize,
                    max_bytes,
                    deadline,
                )
                .await
            },
        )
        .await
    }

    async fn stat(
        &mut self,
        session: Resource<Session>,
        path: String,
    ) -> wasmtime::Result<Result<Option<wit::FileInfo>, wit::Error>> {
        self.on_session(
            &session,
            Operation::Stat,
            async |lease, shown, _granted, deadline| {
                let info = operations::stat(&lease.connection, shown, &path, deadline).await?;
                Ok(info.map(wit::FileInfo::from))
            },
        )
        .await
    }

    async fn list_directory(
        &mut self,
        session: Resource<Session>,
        path: String,
    ) -> wasmtime::Result<Result<Vec<wit::DirectoryEntry>, wit::Error>> {
        self.on_session(
            &session,
            Operation::ListDirectory,
            async |lease, shown, _granted, deadline| {
                let entries =
                    operations::list_directory(&lease.connection, shown, &path, deadline).await?;
                Ok(entries
                    .into_iter()
                    .map(|(name, info)| wit::DirectoryEntry {
                        name,
                        info: info.into(),
                    })
                    .collect())
            },
        )
        .await
    }

    async fn drop(&mut self, session: Resource<Session>) -> wasmtime::Result<()> {
        self.table.delete(session)?;
        Ok(())
    }
}
