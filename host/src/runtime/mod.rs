//! The WebAssembly runtime: compiles connector components, pre-links them
//! against the sandbox's imports, and runs every call in a fresh instance
//! with a deadline, a memory cap and an outbound-HTTP allow-list.
//!
//! wasmtime types stay inside this module; the rest of the host sees
//! [`WasmConnector`] through the [`crate::connector::Connector`] trait.

mod bindings;
mod call;
mod engine;
mod guest_log;
mod outbound_http;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use wasmtime::{Engine, component::Component, component::Linker};

use crate::{
    connector::{
        Connector, ConnectorError, ConnectorInfo, CreateRequest, DeleteRequest, GetRequest,
        LogsPage, LogsRequest, MetricResult, MetricsRequest, Resource,
    },
    manifest::Manifest,
};

use self::{
    bindings::PluginPre,
    call::{CallLimits, CallState},
};

/// How the runtime is sized.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Threads that run guest code (`--worker`).
    pub guest_threads: usize,
    /// Calls that may be in flight at once; one more is refused as busy.
    pub max_concurrent_calls: usize,
    /// Deadline of a call unless the plugin's manifest sets one.
    pub default_timeout: Duration,
    /// Memory cap of a call unless the plugin's manifest sets one.
    pub default_memory_bytes: usize,
    /// The largest memory cap a manifest may ask for.
    pub max_memory_bytes: usize,
    /// Where compiled components are cached across restarts; `None` disables it.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            guest_threads: 10,
            max_concurrent_calls: 100,
            default_timeout: Duration::from_secs(60),
            default_memory_bytes: 256 * 1024 * 1024,
            max_memory_bytes: 1024 * 1024 * 1024,
            cache_dir: default_cache_dir(),
        }
    }
}

/// `$XDG_CACHE_HOME/flyte-connect` or `~/.cache/flyte-connect`.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|dir| dir.join("flyte-connect"))
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a component wasmtime can compile.
    #[error("cannot compile {path}: {message}")]
    Compile {
        /// The file.
        path: String,
        /// wasmtime's explanation.
        message: String,
    },
    /// The component imports something the sandbox does not provide, or does
    /// not export the `flyte:connector/plugin` world.
    #[error("{path} is not a flyte:connector/plugin component: {message}")]
    Link {
        /// The file.
        path: String,
        /// What is missing.
        message: String,
    },
    /// The component's `metadata` call failed.
    #[error("{path}: metadata call failed: {source}")]
    Metadata {
        /// The file.
        path: String,
        /// What went wrong.
        source: ConnectorError,
    },
    /// The manifest asks for more than the server allows.
    #[error("{path}: {message}")]
    Limits {
        /// The file.
        path: String,
        /// What is out of range.
        message: String,
    },
}

struct Shared {
    engine: Engine,
    linker: Linker<CallState>,
    slots: Arc<Semaphore>,
    max_concurrent_calls: usize,
    guest_threads: call::GuestThreads,
    config: RuntimeConfig,
}

/// Compiles and runs connector components. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl Runtime {
    /// Builds the engine, the pool and the guest threads.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let max_concurrent_calls = config.max_concurrent_calls.max(1);
        let engine = engine::build(&engine::EngineSettings {
            instance_slots: u32::try_from(max_concurrent_calls).unwrap_or(u32::MAX),
            max_memory_bytes: config.max_memory_bytes,
            cache_dir: config.cache_dir.clone(),
        })?;
        let linker = call::linker(&engine)?;
        let guest_threads = call::GuestThreads::start(config.guest_threads.max(1))?;
        Ok(Self {
            shared: Arc::new(Shared {
                engine,
                linker,
                slots: Arc::new(Semaphore::new(max_concurrent_calls)),
                max_concurrent_calls,
                guest_threads,
                config,
            }),
        })
    }

    /// Compiles (or loads from the cache) the component at `path`, links it,
    /// and asks it for its metadata.
    pub async fn load(
        &self,
        path: &Path,
        manifest: &Manifest,
    ) -> Result<Arc<WasmConnector>, LoadError> {
        let shown = path.display().to_string();
        let limits = self
            .limits_for(manifest)
            .map_err(|message| LoadError::Limits {
                path: shown.clone(),
                message,
            })?;
        let engine = self.shared.engine.clone();
        let owned_path = path.to_owned();
        // Compiling takes a while; keep it off the async threads.
        let component =
            tokio::task::spawn_blocking(move || Component::from_file(&engine, owned_path))
                .await
                .map_err(|err| LoadError::Compile {
                    path: shown.clone(),
                    message: err.to_string(),
                })?
                .map_err(|err| LoadError::Compile {
                    path: shown.clone(),
                    message: format!("{err:#}"),
                })?;
        let pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|err| LoadError::Link {
                path: shown.clone(),
                message: format!("{err:#}"),
            })?;
        let file_name: Arc<str> = Arc::from(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| shown.clone()),
        );
        let caller = call::Caller {
            pre,
            limits,
            label: file_name,
            shared: Arc::clone(&self.shared),
        };
        let metadata = caller
            .call("metadata", |store, plugin| {
                Box::pin(async move {
                    let metadata = plugin
                        .flyte_connector_connector()
                        .call_metadata(store)
                        .await?;
                    Ok(Ok(metadata))
                })
            })
            .await
            .map_err(|source| LoadError::Metadata {
                path: shown.clone(),
                source,
            })?;
        let info = bindings::info(metadata);
        let caller = call::Caller {
            label: Arc::from(info.name.as_str()),
            ..caller
        };
        Ok(Arc::new(WasmConnector {
            info,
            source: shown,
            caller,
        }))
    }

    fn limits_for(&self, manifest: &Manifest) -> Result<CallLimits, String> {
        let config = &self.shared.config;
        let memory_bytes = manifest.memory_bytes.unwrap_or(config.default_memory_bytes);
        if memory_bytes > config.max_memory_bytes {
            return Err(format!(
                "manifest asks for {} MiB of memory; the server allows at most {} MiB",
                memory_bytes / (1024 * 1024),
                config.max_memory_bytes / (1024 * 1024)
            ));
        }
        Ok(CallLimits {
            timeout: manifest.timeout.unwrap_or(config.default_timeout),
            memory_bytes,
            allowed_hosts: manifest.allowed_hosts.clone(),
            env: manifest.env.clone().into_iter().collect(),
        })
    }

    /// Calls in flight right now.
    pub fn calls_in_flight(&self) -> usize {
        self.shared.max_concurrent_calls - self.shared.slots.available_permits()
    }
}

/// A connector component, compiled and pre-linked. Every call runs in a
/// fresh instance: nothing survives from one call to the next.
pub struct WasmConnector {
    info: ConnectorInfo,
    source: String,
    caller: call::Caller,
}

#[async_trait]
impl Connector for WasmConnector {
    fn info(&self) -> &ConnectorInfo {
        &self.info
    }

    fn source(&self) -> &str {
        &self.source
    }

    async fn create(&self, request: CreateRequest) -> Result<Vec<u8>, ConnectorError> {
        let request = bindings::create_request(&request);
        self.caller
            .call("create", move |store, plugin| {
                Box::pin(async move {
                    let result = plugin
                        .flyte_connector_connector()
                        .call_create(store, &request)
                        .await?;
                    Ok(result.map_err(bindings::error))
                })
            })
            .await
    }

    async fn get(&self, request: GetRequest) -> Result<Resource, ConnectorError> {
        let request = bindings::get_request(&request);
        let resource = self
            .caller
            .call("get", move |store, plugin| {
                Box::pin(async move {
                    let result = plugin
                        .flyte_connector_connector()
                        .call_get(store, &request)
                        .await?;
                    Ok(result.map_err(bindings::error))
                })
            })
            .await?;
        bindings::resource(resource)
    }

    async fn delete(&self, request: DeleteRequest) -> Result<(), ConnectorError> {
        let request = bindings::delete_request(&request);
        self.caller
            .call("delete", move |store, plugin| {
                Box::pin(async move {
                    let result = plugin
                        .flyte_connector_connector()
                        .call_delete(store, &request)
                        .await?;
                    Ok(result.map_err(bindings::error))
                })
            })
            .await
    }

    async fn get_metrics(
        &self,
        request: MetricsRequest,
    ) -> Result<Vec<MetricResult>, ConnectorError> {
        let request = bindings::metrics_request(&request);
        let results = self
            .caller
            .call("get_metrics", move |store, plugin| {
                Box::pin(async move {
                    let result = plugin
                        .flyte_connector_connector()
                        .call_get_metrics(store, &request)
                        .await?;
                    Ok(result.map_err(bindings::error))
                })
            })
            .await?;
        bindings::metric_results(results)
    }

    async fn get_logs(&self, request: LogsRequest) -> Result<LogsPage, ConnectorError> {
        let request = bindings::logs_request(&request);
        let page = self
            .caller
            .call("get_logs", move |store, plugin| {
                Box::pin(async move {
                    let result = plugin
                        .flyte_connector_connector()
                        .call_get_logs(store, &request)
                        .await?;
                    Ok(result.map_err(bindings::error))
                })
            })
            .await?;
        Ok(bindings::logs_page(page))
    }
}
