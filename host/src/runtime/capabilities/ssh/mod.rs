//! SSH: commands and files on hosts the plugin's manifest allows, the
//! `flyte:connector/ssh` interface (since 1.1.0).
//!
//! ```toml
//! [ssh]
//! allowed_hosts = ["login.hpc.example.com", "10.0.0.0/8:2222"]
//! known_hosts_file = "/etc/secrets/known_hosts"   # under --credentials-dir
//! known_hosts = ["login.hpc.example.com ssh-ed25519 AAAA..."]
//! # skip_host_key_verification = false
//! # connect_timeout_seconds = 10, command_timeout_seconds = 60,
//! # max_output_mb = 16, max_file_mb = 64, max_connections = 16
//! ```
//!
//! - The grant: the rules (the syntax of `allowed_hosts`, port 22 by
//!   default, judged by address as outbound HTTP is: `egress`), the known
//!   hosts of the manifest and of a pod file, whether host keys go
//!   unverified, the limits, and one connection [`pool`] per plugin.
//! - Host keys are always verified ([`known_hosts`]) unless the manifest
//!   says otherwise; an unknown or mismatched key fails the call naming the
//!   host and the key's fingerprint.
//! - Each instance's store holds an [`InstanceSsh`]: the grant, the
//!   connector's label, and the deadline of the call it runs, which every
//!   operation ends by ([`operations`]).
//! - [`guest`] is the interface the guest imports.

mod error;
mod files;
mod guest;
mod known_hosts;
mod metrics;
mod operations;
mod pool;

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;
use wasmtime::component::Linker;

use self::{known_hosts::KnownHosts, metrics::SshMetrics, pool::Pool};
use super::capability::{CallScope, Capability, GrantError, HasState, InstanceScope, LoadScope};
use super::config_error::ConfigError;
use super::egress::{AddressPolicy, HostRule, Protocol};
use crate::manifest;

pub use self::guest::{Session, interface as wit_interface};
pub(in crate::runtime::capabilities) use self::{
    error::SshError,
    files::{Found, RemoteFiles},
};

/// How long an unused pooled connection stays open, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_OUTPUT_MB: u64 = 16;
const DEFAULT_MAX_FILE_MB: u64 = 64;
const DEFAULT_MAX_CONNECTIONS: usize = 16;
const MAX_CONNECTIONS: usize = 256;
const MAX_MB: u64 = 1024;

/// The flags of SSH.
#[derive(Debug, Clone, clap::Args)]
pub struct SshArgs {
    /// Seconds an unused pooled SSH connection stays open.
    #[arg(long, env = "FLYTE_CONNECT_SSH_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
    pub ssh_idle_timeout: f64,
}

impl Default for SshArgs {
    fn default() -> Self {
        Self {
            ssh_idle_timeout: DEFAULT_IDLE_TIMEOUT.as_secs_f64(),
        }
    }
}

/// The server-wide settings of SSH.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// How long an unused pooled connection stays open.
    pub idle_timeout: Duration,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// SSH, the capability.
pub struct Ssh {
    idle_timeout: Duration,
    metrics: SshMetrics,
}

/// The `[ssh]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SshSection {
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    known_hosts: Vec<String>,
    known_hosts_file: Option<PathBuf>,
    #[serde(default)]
    skip_host_key_verification: bool,
    connect_timeout_seconds: Option<f64>,
    command_timeout_seconds: Option<f64>,
    max_output_mb: Option<u64>,
    max_file_mb: Option<u64>,
    max_connections: Option<usize>,
}

/// The limits of a plugin's SSH operations.
#[derive(Debug, Clone, Copy)]
struct SshLimits {
    connect_timeout: Duration,
    command_timeout: Duration,
    max_output_bytes: usize,
    max_file_bytes: usize,
}

/// What a plugin's manifest grants.
#[derive(Clone)]
pub struct SshGrant(Option<Arc<SshGranted>>);

/// A plugin's `[ssh]`, parsed, with its connections.
struct SshGranted {
    rules: Arc<[HostRule]>,
    addresses: AddressPolicy,
    known_hosts: KnownHosts,
    skip_host_key_verification: bool,
    limits: SshLimits,
    pool: Arc<Pool>,
    metrics: SshMetrics,
}

/// The SSH state of one instance's store.
pub struct InstanceSsh {
    grant: SshGrant,
    connector: Arc<str>,
    call: Option<CallScope>,
}

/// `key` of `[ssh]` in megabytes, as bytes.
fn megabytes(key: &str, value: Option<u64>, default: u64) -> Result<usize, GrantError> {
    match value.unwrap_or(default) {
        mb @ 1..=MAX_MB => Ok((mb as usize) << 20),
        mb => Err(GrantError::invalid(
            key,
            format!("{mb} is out of range (1 to {MAX_MB})"),
        )),
    }
}

fn timeout(key: &str, secs: Option<f64>, default: Duration) -> Result<Duration, GrantError> {
    manifest::seconds(key, secs)
        .map(|secs| secs.unwrap_or(default))
        .map_err(|reason| GrantError::invalid(key, reason))
}

impl SshSection {
    fn limits(&self) -> Result<SshLimits, GrantError> {
        Ok(SshLimits {
            connect_timeout: timeout(
                "ssh.connect_timeout_seconds",
                self.connect_timeout_seconds,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            command_timeout: timeout(
                "ssh.command_timeout_seconds",
                self.command_timeout_seconds,
                DEFAULT_COMMAND_TIMEOUT,
            )?,
            max_output_bytes: megabytes(
                "ssh.max_output_mb",
                self.max_output_mb,
                DEFAULT_MAX_OUTPUT_MB,
            )?,
            max_file_bytes: megabytes("ssh.max_file_mb", self.max_file_mb, DEFAULT_MAX_FILE_MB)?,
        })
    }

    fn max_connections(&self) -> Result<usize, GrantError> {
        match self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS) {
            n @ 1..=MAX_CONNECTIONS => Ok(n),
            n => Err(GrantError::invalid(
                "ssh.max_connections",
                format!("{n} is out of range (1 to {MAX_CONNECTIONS})"),
            )),
        }
    }
}

impl Capability for Ssh {
    const MANIFEST_KEYS: &'static [&'static str] = &["ssh"];
    type Args = SshArgs;
    type Config = SshConfig;
    type Grant = SshGrant;
    type State = InstanceSsh;

    fn configure(args: Self::Args) -> Result<Self::Config, ConfigError> {
        let idle_timeout =
            manifest::bounded_seconds(args.ssh_idle_timeout).ok_or_else(|| ConfigError {
                flag: "--ssh-idle-timeout",
                reason: format!(
                    "{} is not a positive number of seconds up to {}",
                    args.ssh_idle_timeout,
                    manifest::MAX_SECONDS
                ),
            })?;
        Ok(SshConfig { idle_timeout })
    }

    fn new(
        config: &Self::Config,
        metrics: &crate::metrics::MetricRegistry,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            idle_timeout: config.idle_timeout,
            metrics: SshMetrics::register(metrics)?,
        })
    }

    fn grant(&self, load: &mut LoadScope<'_>) -> Result<Self::Grant, GrantError> {
        let Some(section) = load.section::<SshSection>("ssh")? else {
            return Ok(SshGrant(None));
        };
        let rules: Arc<[HostRule]> = section
            .allowed_hosts
            .iter()
            .map(|rule| {
                HostRule::parse_for(Protocol::Ssh, rule)
                    .map_err(|err| GrantError::invalid("ssh.allowed_hosts", err.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let mut known_hosts = KnownHosts::default();
        let skipped = known_hosts.add(&section.known_hosts.join("\n"));
        if skipped > 0 {
            return Err(GrantError::invalid(
                "ssh.known_hosts",
                format!("{skipped} entries are not known_hosts lines (HOSTS KEY-TYPE BASE64-KEY)"),
            ));
        }
        if let Some(path) = &section.known_hosts_file {
            let text = load.read_file("ssh.known_hosts_file", path)?;
            let text = String::from_utf8_lossy(&text);
            let skipped = known_hosts.add(&text);
            if skipped > 0 {
                tracing::warn!(
                    "ssh.known_hosts_file {}: {skipped} lines skipped, not known_hosts lines",
                    path.display()
                );
            }
        }
        let limits = section.limits()?;
        Ok(SshGrant(Some(Arc::new(SshGranted {
            addresses: AddressPolicy::new(Arc::clone(&rules)),
            rules,
            known_hosts,
            skip_host_key_verification: section.skip_host_key_verification,
            limits,
            pool: Pool::new(section.max_connections()?, self.idle_timeout),
            metrics: self.metrics.clone(),
        }))))
    }

    fn add_to_linker<T: HasState<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
        guest::add_to_linker(linker)
    }

    fn instance_state(grant: &Self::Grant, instance: &InstanceScope) -> Self::State {
        InstanceSsh {
            grant: grant.clone(),
            connector: Arc::clone(&instance.connector),
            call: None,
        }
    }

    fn begin_call(state: &mut Self::State, call: &CallScope) {
        state.call = Some(call.clone());
    }
}
