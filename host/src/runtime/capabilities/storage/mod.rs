//! Object storage: files moved from an SSH host into the call's output
//! prefix, host side, and whether objects exist there — the
//! `flyte:connector/storage` interface (since 1.1.0).
//!
//! ```toml
//! [storage]
//! s3_endpoint = "http://minio.flyte.svc:9000"   # an S3-compatible store; AWS's without
//! s3_region = "us-east-1"
//! local_roots = ["/data/flyte"]                 # file:// prefixes allowed
//! # ca_file = "/etc/ssl/store-ca.pem", max_transfers = 2,
//! # transfer_timeout_seconds = 3600
//! ```
//!
//! - A plugin reaches only URIs under the output prefix of the call it
//!   runs ([`uri`]): a request without one reaches nothing.
//! - Stores are built from the URI ([`stores`]) with the pod's ambient
//!   credentials, over the host's own connections ([`http`]).
//! - [`transfer`] moves bytes in the background, streamed, keyed by
//!   destination so that later calls join a transfer in flight.
//! - [`guest`] is the interface the guest imports.

mod guest;
mod http;
mod metrics;
mod stores;
mod transfer;
mod uri;

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;
use wasmtime::component::Linker;

use self::{
    http::StoreHttp,
    metrics::StorageMetrics,
    stores::{S3Settings, Stores},
    transfer::Transfers,
};
use super::capability::{CallScope, Capability, GrantError, HasState, InstanceScope, LoadScope};
use super::config_error::ConfigError;
use super::outbound_http::{PlatformRoots, ProxySettings, operator_endpoints};
use crate::manifest;

pub use self::guest::interface as wit_interface;

const DEFAULT_MAX_TRANSFERS: usize = 2;
const MAX_TRANSFERS: usize = 64;
const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum StorageError {
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
}

/// The flags of object storage: none (stores come from the manifest and
/// the pod's environment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StorageArgs {}

/// Its server-wide settings: none.
#[derive(Debug, Clone, Default)]
pub struct StorageConfig {}

/// Object storage, the capability: what it reads of the platform once.
pub struct Storage {
    roots: PlatformRoots,
    proxy: Arc<ProxySettings>,
    metrics: StorageMetrics,
}

/// The `[storage]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    #[serde(default)]
    local_roots: Vec<PathBuf>,
    ca_file: Option<PathBuf>,
    max_transfers: Option<usize>,
    transfer_timeout_seconds: Option<f64>,
}

/// What a plugin's manifest grants.
#[derive(Clone)]
pub struct StorageGrant(Option<Arc<StorageGranted>>);

/// A plugin's `[storage]`, with its stores and transfers.
struct StorageGranted {
    stores: Stores,
    transfers: Transfers,
    metrics: StorageMetrics,
}

/// The storage state of one instance's store.
pub struct InstanceStorage {
    grant: StorageGrant,
    connector: Arc<str>,
    call: Option<CallScope>,
}

impl Capability for Storage {
    const MANIFEST_KEYS: &'static [&'static str] = &["storage"];
    type Args = StorageArgs;
    type Config = StorageConfig;
    type Grant = StorageGrant;
    type State = InstanceStorage;

    fn configure(_args: Self::Args) -> Result<Self::Config, ConfigError> {
        Ok(StorageConfig {})
    }

    /// Reads the platform's CA roots and the proxies of the server's
    /// environment, as outbound HTTP does.
    fn new(
        _config: &Self::Config,
        metrics: &crate::metrics::MetricRegistry,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            roots: PlatformRoots::load(),
            proxy: Arc::new(ProxySettings::from_env().map_err(anyhow::Error::msg)?),
            metrics: StorageMetrics::register(metrics)?,
        })
    }

    fn grant(&self, load: &mut LoadScope<'_>) -> Result<Self::Grant, GrantError> {
        let Some(section) = load.section::<StorageSection>("storage")? else {
            return Ok(StorageGrant(None));
        };
        if let Some(endpoint) = &section.s3_endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return Err(GrantError::invalid(
                "storage.s3_endpoint",
                format!("{endpoint} is not an http(s):// URL"),
            ));
        }
        let local_roots = section
            .local_roots
            .iter()
            .map(|root| stores::local_root(root))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| GrantError::invalid("storage.local_roots", reason))?;
        let max_transfers = match section.max_transfers.unwrap_or(DEFAULT_MAX_TRANSFERS) {
            n @ 1..=MAX_TRANSFERS => n,
            n => {
                return Err(GrantError::invalid(
                    "storage.max_transfers",
                    format!("{n} is out of range (1 to {MAX_TRANSFERS})"),
                ));
            }
        };
        let timeout = manifest::seconds(
            "storage.transfer_timeout_seconds",
            section.transfer_timeout_seconds,
        )
        .map_err(|reason| GrantError::invalid("storage.transfer_timeout_seconds", reason))?
        .unwrap_or(DEFAULT_TRANSFER_TIMEOUT);
        let connector = operator_endpoints(
            &self.roots,
            Arc::clone(&self.proxy),
            "storage.ca_file",
            section.ca_file.as_deref(),
            load,
        )?;
        let s3 = S3Settings {
            endpoint: section.s3_endpoint,
            region: section.s3_region,
        };
        Ok(StorageGrant(Some(Arc::new(StorageGranted {
            stores: Stores::new(s3, local_roots, StoreHttp::new(connector)),
            transfers: Transfers::new(max_transfers, timeout),
            metrics: self.metrics.clone(),
        }))))
    }

    fn add_to_linker<T: HasState<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
        guest::add_to_linker(linker)
    }

    fn instance_state(grant: &Self::Grant, instance: &InstanceScope) -> Self::State {
        InstanceStorage {
            grant: grant.clone(),
            connector: Arc::clone(&instance.connector),
            call: None,
        }
    }

    fn begin_call(state: &mut Self::State, call: &CallScope) {
        state.call = Some(call.clone());
    }
}
