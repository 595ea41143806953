//! The cluster's login node, reached over the host's SSH capability: the
//! commands the connector runs there and how their failures read.

use flyte_connector_sdk::{
    Connection, Error,
    ssh::{Destination, Session, SshError},
};

use crate::custom::{KNOWN_HOSTS_SECRET, PRIVATE_KEY_ENV, PRIVATE_KEY_SECRET, setting};

/// The most read of a job file's tail.
const MAX_TAIL_BYTES: u64 = 1 << 20;

/// What a command did.
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
    /// The exit status; -1 when a signal ended it.
    pub rc: i64,
}

/// A session on the login node.
pub struct Login {
    session: Session,
    host: String,
}

impl Login {
    /// Connects as `username` to `host:port` with the connection's key (or
    /// the connector's), the connection's known_hosts lines beside the
    /// manifest's.
    pub fn open(
        host: &str,
        port: u16,
        username: &str,
        connection: &Connection,
    ) -> Result<Self, Error> {
        let key = connection
            .get(PRIVATE_KEY_SECRET)
            .filter(|key| !key.is_empty())
            .map(str::to_owned)
            .or_else(|| setting(PRIVATE_KEY_ENV))
            .ok_or_else(|| {
                Error::invalid_request(format!(
                    "Missing Slurm SSH private key. Set `ssh_private_key` on the Slurm config to \
                     the name of a Flyte secret, or set {PRIVATE_KEY_ENV} on the connector."
                ))
            })?;
        let to = Destination::new(host, username, key)
            .port(port)
            .known_hosts(connection.get(KNOWN_HOSTS_SECRET).unwrap_or_default());
        Ok(Self {
            session: Session::connect(&to)?,
            host: host.to_owned(),
        })
    }

    /// The session, for the host's transfers from it.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The host's name, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Runs `command`, whatever its exit status.
    pub fn run(&self, command: &str) -> Result<Ran, Error> {
        let output = self.session.exec(command)?;
        Ok(Ran {
            stdout: output.stdout_text(),
            stderr: output.stderr_text(),
            rc: output.exit_status.map_or(-1, i64::from),
        })
    }

    /// Runs `command`; a non-zero exit status fails the call with what the
    /// command printed.
    pub fn run_checked(&self, command: &str) -> Result<String, Error> {
        let ran = self.run(command)?;
        if ran.rc != 0 {
            let said = match ran.stderr.trim() {
                "" => ran.stdout.trim(),
                stderr => stderr,
            };
            return Err(Error::failed(format!(
                "`{command}` failed on {} (rc={}): {said}",
                self.host, ran.rc
            )));
        }
        Ok(ran.stdout)
    }

    /// Writes the file `path` with permission bits `mode`.
    pub fn write(&self, path: &str, contents: &str, mode: u32) -> Result<(), Error> {
        Ok(self.session.write_file(path, contents.as_bytes(), mode)?)
    }

    /// The last `lines` lines of `path`; empty when it does not exist (yet).
    pub fn tail(&self, path: &str, lines: u32) -> Result<String, Error> {
        match self.session.read_tail(path, lines, MAX_TAIL_BYTES) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(SshError::Remote(_)) => Ok(String::new()),
            Err(other) => Err(other.into()),
        }
    }
}
