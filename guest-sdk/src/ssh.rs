//! Commands and files on hosts reached over SSH (contract 1.1.0).
//!
//! The host connects only where the plugin's manifest allows (`[ssh]
//! allowed_hosts`), verifies the server's host key against the known hosts
//! (the [`Destination`]'s own lines, the manifest's, a file of the pod's)
//! and keeps connections open across calls of the same identity. Every
//! operation ends within the call's deadline.
//!
//! ```no_run
//! use flyte_connector_sdk::{prelude::*, ssh::{Destination, Session}};
//!
//! fn submit(connection: &Connection, script: &str) -> Result<String, Error> {
//!     let key = connection.get("ssh_private_key").ok_or_else(|| Error::invalid_request("no key"))?;
//!     let to = Destination::new("login.hpc.example.com", "flyte", key)
//!         .known_hosts(connection.get("known_hosts_data").unwrap_or_default());
//!     let session = Session::connect(&to)?;
//!     session.write_file(".flyte/jobs/job.sbatch", script.as_bytes(), 0o700)?;
//!     let submitted = session.exec("sbatch --parsable .flyte/jobs/job.sbatch")?;
//!     if !submitted.success() {
//!         return Err(Error::failed(submitted.stderr_text()));
//!     }
//!     Ok(submitted.stdout_text().trim().to_owned())
//! }
//! ```

use std::{fmt, time::Duration};

use crate::{__private::bindings::flyte::connector::ssh as wit, Error};

/// Whom to reach, and as whom.
#[derive(Clone)]
pub struct Destination {
    host: String,
    port: u16,
    user: String,
    private_key: String,
    passphrase: Option<String>,
    known_hosts: String,
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// `user` at `host`, port 22, authenticating with `private_key`
    /// (OpenSSH or PEM text).
    pub fn new(
        host: impl Into<String>,
        user: impl Into<String>,
        private_key: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port: 22,
            user: user.into(),
            private_key: private_key.into(),
            passphrase: None,
            known_hosts: String::new(),
        }
    }

    /// Another port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The passphrase of an encrypted key.
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.passphrase = Some(passphrase.into());
        self
    }

    /// known_hosts lines for the host (e.g. a connection's
    /// `known_hosts_data`), beside those the manifest grants.
    pub fn known_hosts(mut self, lines: impl Into<String>) -> Self {
        self.known_hosts = lines.into();
        self
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host:port`.
    pub fn shown(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why an SSH operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshError {
    /// The manifest does not allow this host, port or address.
    NotAllowed(String),
    /// The server's host key is unknown or does not match.
    HostKey(String),
    /// The server refused the key.
    Authentication(String),
    /// The host could not be reached, or the connection broke.
    Unreachable(String),
    /// Past the operation's timeout or the call's deadline.
    Timeout(String),
    /// The server failed the operation: no such file, permission denied.
    Remote(String),
    /// An argument that cannot be used: a key that cannot be read.
    Invalid(String),
}

impl SshError {
    /// Whether a later attempt may succeed: unreachable, or timed out.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Timeout(_))
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::NotAllowed(m)
            | Self::HostKey(m)
            | Self::Authentication(m)
            | Self::Unreachable(m)
            | Self::Timeout(m)
            | Self::Remote(m)
            | Self::Invalid(m) => m,
        }
    }
}

impl fmt::Display for SshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for SshError {}

impl From<wit::Error> for SshError {
    fn from(error: wit::Error) -> Self {
        match error {
            wit::Error::NotAllowed(m) => Self::NotAllowed(m),
            wit::Error::HostKey(m) => Self::HostKey(m),
            wit::Error::Authentication(m) => Self::Authentication(m),
            wit::Error::Unreachable(m) => Self::Unreachable(m),
            wit::Error::Timeout(m) => Self::Timeout(m),
            wit::Error::Remote(m) => Self::Remote(m),
            wit::Error::Invalid(m) => Self::Invalid(m),
        }
    }
}

/// Unreachable and timed-out operations are retryable (the client sees
/// UNAVAILABLE and polls again); the others fail the call.
impl From<SshError> for Error {
    fn from(error: SshError) -> Self {
        if error.is_retryable() {
            Error::Retryable(error.to_string())
        } else {
            Error::Failed(error.to_string())
        }
    }
}

/// How a command runs: [`Session::exec_with`].
#[derive(Debug, Clone, Default)]
pub struct Exec {
    stdin: Vec<u8>,
    timeout: Option<Duration>,
    max_output_bytes: Option<u64>,
}

impl Exec {
    /// Options: nothing on standard input, the manifest's timeout and
    /// output cap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `stdin` to the command's standard input, then closes it.
    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = stdin.into();
        self
    }

    /// A shorter timeout than the manifest's `command_timeout_seconds`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Keeps at most `bytes` of each of standard output and error.
    pub fn max_output_bytes(mut self, bytes: u64) -> Self {
        self.max_output_bytes = Some(bytes);
        self
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Its exit status; `None` when a signal ended it.
    pub exit_status: Option<u32>,
    /// The signal that ended it, e.g. `"KILL"`.
    pub exit_signal: Option<String>,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
    /// Whether an output was cut at the cap.
    pub truncated: bool,
}

impl Output {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A remote file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// Its size in bytes.
    pub size: u64,
    /// Whether it is a directory.
    pub is_directory: bool,
    /// Its permission bits.
    pub mode: u32,
    /// Last modified, in seconds since the Unix epoch.
    pub modified: u64,
}

impl From<wit::FileInfo> for FileInfo {
    fn from(info: wit::FileInfo) -> Self {
        Self {
            size: info.size,
            is_directory: info.is_directory,
            mode: info.mode,
            modified: info.modified,
        }
    }
}

/// A connection to one destination, as one identity. Paths are the
/// server's: absolute, or relative to the user's home directory (`~/`
/// means the same).
pub struct Session(wit::Session);

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Session")
    }
}

impl Session {
    /// The session the bindings know.
    pub(crate) fn handle(&self) -> &wit::Session {
        &self.0
    }

    /// Connects (or takes a pooled connection of the same identity),
    /// verifying the host key and authenticating.
    pub fn connect(to: &Destination) -> Result<Self, SshError> {
        let destination = wit::Destination {
            host: to.host.clone(),
            port: to.port,
            user: to.user.clone(),
            private_key: to.private_key.clone(),
            passphrase: to.passphrase.clone(),
            known_hosts: to.known_hosts.clone(),
        };
        Ok(Self(wit::connect(&destination)?))
    }

    /// Runs a command line (by the user's shell), with the manifest's
    /// timeout and output cap.
    pub fn exec(&self, command: &str) -> Result<Output, SshError> {
        self.exec_with(command, Exec::new())
    }

    /// Runs a command line with `options`.
    pub fn exec_with(&self, command: &str, options: Exec) -> Result<Output, SshError> {
        let options = wit::ExecOptions {
            stdin: options.stdin,
            timeout_ms: options
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            max_output_bytes: options.max_output_bytes,
        };
        let output = self.0.exec(command, &options)?;
        Ok(Output {
            exit_status: output.exit_status,
            exit_signal: output.exit_signal,
            stdout: output.stdout,
            stderr: output.stderr,
            truncated: output.truncated,
        })
    }

    /// Writes a file, created or replaced, with permission bits `mode`.
    pub fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), SshError> {
        Ok(self.0.write_file(path, contents, mode)?)
    }

    /// Up to `length` bytes of a file from `offset`.
    pub fn read_file(&self, path: &str, offset: u64, length: u64) -> Result<Vec<u8>, SshError> {
        Ok(self.0.read_file(path, offset, length)?)
    }

    /// The last `lines` lines of a file, within its last `max_bytes`.
    pub fn read_tail(&self, path: &str, lines: u32, max_bytes: u64) -> Result<Vec<u8>, SshError> {
        Ok(self.0.read_tail(path, lines, max_bytes)?)
    }

    /// A file or directory; `None` when nothing is at `path`.
    pub fn stat(&self, path: &str) -> Result<Option<FileInfo>, SshError> {
        Ok(self.0.stat(path)?.map(FileInfo::from))
    }

    /// The entries of a directory, by name.
    pub fn list_directory(&self, path: &str) -> Result<Vec<(String, FileInfo)>, SshError> {
        Ok(self
            .0
            .list_directory(path)?
            .into_iter()
            .map(|entry| (entry.name, entry.info.into()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_never_shows_its_key() {
        let to = Destination::new(
            "login",
            "flyte",
            "-----BEGIN OPENSSH PRIVATE KEY-----s3cr3t",
        )
        .passphrase("p4ss")
        .known_hosts("login ssh-ed25519 AAAA")
        .port(2222);
        let shown = format!("{to:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("p4ss"),
            "{shown}"
        );
        assert_eq!(to.shown(), "login:2222");
    }

    #[test]
    fn only_unreachable_and_timeouts_are_retryable() {
        assert_eq!(
            Error::from(SshError::Unreachable("down".into())),
            Error::Retryable("down".into())
        );
        assert_eq!(
            Error::from(SshError::Timeout("slow".into())),
            Error::Retryable("slow".into())
        );
        assert_eq!(
            Error::from(SshError::HostKey("changed".into())),
            Error::Failed("changed".into())
        );
    }
}
