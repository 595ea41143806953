//! The WebAssembly runtime: compiles connector components, pre-links them
//! against the sandbox's imports, and runs every call in an instance from a
//! pool — a fresh one, or for a plugin that opts in a warm one that served
//! the same tenant before — with a deadline, a memory cap, an outbound-HTTP
//! allow-list and limits on what it may return.
//!
//! wasmtime types stay inside this module; the rest of the host sees
//! [`WasmConnector`] through the [`crate::connector::Connector`] trait.
//!
//! - [`engine`](self): the one engine, its instance pool and compile cache.
//! - `admission`: call slots and the queue of calls waiting for one.
//! - `call`: one call: its instance, limits and failure classification.
//! - `instance`: an instance and its store: per-instance state, and the
//!   scope each call installs on it.
//! - `warm`: idle instances kept for later calls of the same tenant.
//! - `component`: [`WasmConnector`], a loaded component.
//! - `bindings`: the WIT world's host bindings and their conversions.
//! - `return_limits`: [`ReturnLimits`] on what a guest returns.
//! - `capability`: the seam of what a manifest may grant: each capability
//!   parses its own sections into a grant, links its imports and prepares
//!   each call's state.
//! - `outbound_http`: the outbound-HTTP capability: allow-list, limits, a
//!   pooled client per plugin, TLS trust and proxies.
//! - `pod_credentials`: connection values read from the pod's environment
//!   and files.
//! - `credential_roots`: which of the pod's files and environment variables
//!   a manifest may name at all.
//! - `guest_log`: a guest's stdout and stderr, into the host's log.
//! - `memory_budget`: the memory all calls in flight may hold at once, and
//!   each instance's charge against it.
//! - `pod_memory`: the memory the process may use (its cgroup's limit),
//!   which the budget's default is a share of.

mod admission;
mod bindings;
mod call;
mod capability;
mod component;
mod credential_roots;
mod engine;
mod guest_log;
mod instance;
mod memory_budget;
mod outbound_http;
mod pod_credentials;
mod pod_memory;
mod return_limits;
mod warm;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use wasmtime::{
    Engine,
    component::{Component, Linker},
};

use crate::{
    connector::{ConnectorError, Deadline},
    manifest::{InstanceReuse, Manifest},
    metrics::{InstanceMetrics, Metrics},
};

use self::{
    admission::Admission,
    bindings::PluginPre,
    call::{CallLimits, Caller},
    capability::Capabilities,
    instance::{Instance, InstanceState},
    memory_budget::{MemoryBudget, MemoryEstimate},
    outbound_http::{OutboundHttp, PlatformRoots, ProxySettings},
    pod_credentials::PodCredentials,
    warm::WarmPool,
};

pub use self::{
    component::WasmConnector,
    credential_roots::CredentialRoots,
    engine::SlotBudget,
    memory_budget::{BudgetSize, DEFAULT_BUDGET_PERCENT},
    pod_memory::{LimitSource, MemoryLimit},
    return_limits::ReturnLimits,
    warm::{IdleLimit, ReuseLimits},
};

/// How the runtime is sized and what it allows.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Call slots: instances that may run at once (a component that needs
    /// more pool resources than one slot holds takes several per call).
    pub call_slots: usize,
    /// Calls that may wait for a slot; one more is refused as busy.
    pub max_queued_calls: usize,
    /// What one slot of the instance pool holds.
    pub slot_budget: SlotBudget,
    /// Bytes at the start of each linear memory that a reset rewrites in
    /// place rather than handing back to the kernel (see [`engine`]).
    pub memory_keep_resident: usize,
    /// Deadline of a call unless the plugin's manifest sets one.
    pub default_timeout: Duration,
    /// Memory cap of an instance (over all its calls) unless the plugin's
    /// manifest sets one.
    pub default_memory_bytes: usize,
    /// The largest memory cap a manifest may ask for.
    pub max_memory_bytes: usize,
    /// What a guest may return.
    pub return_limits: ReturnLimits,
    /// How many instances are kept warm, how long, for how many calls.
    pub reuse: ReuseLimits,
    /// Where compiled components are cached across restarts; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// More CA certificates (PEM) every plugin's outbound TLS trusts,
    /// beside the system's.
    pub ca_file: Option<PathBuf>,
    /// What of the pod (files, environment variables) a manifest may read.
    pub credential_roots: CredentialRoots,
    /// The memory all calls in flight may hold at once.
    pub memory_budget: BudgetSize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            call_slots: 1000,
            max_queued_calls: 10_000,
            slot_budget: SlotBudget::default(),
            memory_keep_resident: engine::DEFAULT_MEMORY_KEEP_RESIDENT,
            default_timeout: Duration::from_secs(60),
            default_memory_bytes: 256 * 1024 * 1024,
            max_memory_bytes: 1024 * 1024 * 1024,
            return_limits: ReturnLimits::default(),
            reuse: ReuseLimits::default(),
            cache_dir: default_cache_dir(),
            ca_file: None,
            credential_roots: CredentialRoots::default(),
            memory_budget: BudgetSize::default(),
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
    /// A section of the manifest cannot be granted: an unknown key, an
    /// invalid value, a file it names that cannot be read.
    #[error("invalid manifest {path}: {message}")]
    Manifest {
        /// The manifest's path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The manifest, or the component itself, asks for more than the server allows.
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
    linker: Linker<InstanceState>,
    capabilities: Capabilities,
    admission: Admission,
    budget: MemoryBudget,
    warm: Arc<WarmPool<Instance>>,
    instance_metrics: InstanceMetrics,
    config: RuntimeConfig,
}

/// Compiles and runs connector components. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl Runtime {
    /// Builds the engine and its instance pool, and reads what outbound
    /// HTTP trusts and goes through (the system's CA certificates,
    /// `ca_file`, the proxy variables); guest activity (outbound HTTP) is
    /// recorded into `metrics`.
    pub fn new(config: RuntimeConfig, metrics: Metrics) -> anyhow::Result<Self> {
        let proxy = ProxySettings::from_env().map_err(anyhow::Error::msg)?;
        if let Some(summary) = proxy.summary() {
            tracing::info!("{summary}");
        }
        let capabilities = Capabilities {
            http: OutboundHttp {
                roots: PlatformRoots::load(),
                // Relative to where the server started, not to a manifest.
                ca_file: config
                    .ca_file
                    .as_deref()
                    .map(std::path::absolute)
                    .transpose()
                    .map_err(|err| anyhow::anyhow!("--ca-file: {err}"))?,
                proxy: Arc::new(proxy),
                metrics: metrics.outbound.clone(),
                labels: Arc::default(),
            },
            credentials: PodCredentials,
            roots: config.credential_roots.clone(),
        };
        // What every plugin is granted, tried once now: an unreadable
        // --ca-file stops start-up rather than every load.
        capabilities
            .grant(&Manifest::default())
            .map_err(anyhow::Error::msg)?;
        let call_slots = config.call_slots.max(1);
        let engine = engine::build(&engine::EngineSettings {
            slots: u32::try_from(call_slots).unwrap_or(u32::MAX),
            budget: config.slot_budget,
            memory_keep_resident: config.memory_keep_resident,
            max_memory_bytes: config.max_memory_bytes,
            cache_dir: config.cache_dir.clone(),
        })?;
        let linker = instance::linker(&engine)?;
        let (budget_bytes, sized) = config.memory_budget.resolve(pod_memory::current);
        tracing::info!(
            "memory budget of the calls in flight: {} MiB ({sized})",
            budget_bytes >> 20
        );
        metrics
            .memory_budget_bytes
            .set(i64::try_from(budget_bytes).unwrap_or(i64::MAX));
        let budget = MemoryBudget::new(
            budget_bytes,
            Some(memory_budget::BudgetGauges {
                used: metrics.memory_budget_used_bytes.clone(),
                waiting: metrics.memory_budget_waiting.clone(),
            }),
        );
        let warm = WarmPool::new(config.reuse)?;
        let evictable = Arc::downgrade(&warm);
        budget.set_evict(Box::new(move || {
            evictable.upgrade().is_some_and(|warm| warm.evict_oldest())
        }));
        Ok(Self {
            shared: Arc::new(Shared {
                engine,
                linker,
                capabilities,
                admission: Admission::new(call_slots, config.max_queued_calls),
                budget,
                warm,
                instance_metrics: metrics.instances.clone(),
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
        let limits_error = |message| LoadError::Limits {
            path: shown.clone(),
            message,
        };
        let file_name: Arc<str> = Arc::from(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| shown.clone()),
        );
        let (grants, files_read) = self
            .shared
            .capabilities
            .grant(manifest)
            .map_err(|message| LoadError::Manifest {
                path: path.with_extension("toml").display().to_string(),
                message,
            })?;
        let limits = self.limits_for(manifest).map_err(limits_error)?;
        if manifest.instance_reuse == InstanceReuse::Connection && grants.credentials.provides_any()
        {
            tracing::warn!(
                "{shown}: instance_reuse = \"connection\" with [credentials]: a call whose \
                 connection lacks those keys gets the pod's, so every such call (from any project \
                 or domain; Flyte's open-source executor sends no connection) has the same \
                 connection map and they share this plugin's warm instances, and what one call \
                 leaves in an instance's memory"
            );
        }
        let engine = self.shared.engine.clone();
        let owned_path = path.to_owned();
        // Compiling takes a while; keep it off the async threads.
        let component = tokio::task::spawn_blocking(move || {
            let component = Component::from_file(&engine, owned_path);
            return_freed_memory();
            component
        })
        .await
        .map_err(|err| LoadError::Compile {
            path: shown.clone(),
            message: err.to_string(),
        })?
        .map_err(|err| LoadError::Compile {
            path: shown.clone(),
            message: format!("{err:#}"),
        })?;
        let slots = self.slots_per_call(&component).map_err(limits_error)?;
        let memory = Arc::new(MemoryEstimate::new(initial_memory(&component)));
        let pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|err| LoadError::Link {
                path: shown.clone(),
                message: format!("{err:#}"),
            })?;
        let caller = Caller {
            pre,
            limits,
            grants: Arc::new(grants),
            slots,
            memory,
            label: file_name,
            owner: self.shared.warm.owner(),
            counters: None,
            shared: Arc::clone(&self.shared),
        };
        let metadata = caller
            .call(
                "metadata",
                Deadline::NONE,
                None,
                0,
                Box::new(|store, plugin| {
                    Box::pin(async move {
                        let metadata = plugin
                            .flyte_connector_connector()
                            .call_metadata(store)
                            .await?;
                        Ok(Ok(metadata))
                    })
                }),
            )
            .await
            .map_err(|source| LoadError::Metadata {
                path: shown.clone(),
                source,
            })?;
        let info = bindings::info(metadata);
        // From now on logs name the connector, not its file.
        let label: Arc<str> = Arc::from(info.name.as_str());
        let counters = Some(self.shared.instance_metrics.for_connector(&label));
        let caller = Caller {
            label,
            counters,
            ..caller
        };
        Ok(Arc::new(WasmConnector {
            info,
            source: shown,
            files_read,
            caller,
            return_limits: self.shared.config.return_limits,
        }))
    }

    /// Call slots one instance of `component` takes, from the memories and
    /// tables it needs.
    fn slots_per_call(&self, component: &Component) -> Result<u32, String> {
        let budget = self.shared.config.slot_budget;
        let slots = match component.resources_required() {
            Some(needs) => {
                tracing::debug!(
                    memories = needs.num_memories,
                    tables = needs.num_tables,
                    initial_memory_kib = needs.max_initial_memory_size.unwrap_or(0) >> 10,
                    "one instance's pool resources"
                );
                budget.slots_for(needs.num_memories, needs.num_tables)
            }
            // It imports core modules: unknown, so one slot; the pool makes
            // the call wait should it need more.
            None => 1,
        };
        let total = self.shared.admission.total_slots();
        if usize::try_from(slots).map_or(true, |slots| slots > total) {
            return Err(format!(
                "one instance needs {slots} call slots of the pool ({} memories and {} tables \
                 each), more than the {total} the server has",
                budget.memories, budget.tables
            ));
        }
        Ok(slots)
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
            env: manifest.env.clone().into_iter().collect(),
            reuse: manifest.instance_reuse,
        })
    }

    /// Calls running in an instance right now.
    pub fn calls_running(&self) -> usize {
        self.shared.admission.running()
    }

    /// Call slots taken by running calls.
    pub fn slots_in_use(&self) -> usize {
        self.shared.admission.slots_in_use()
    }

    /// Instances kept idle for later calls of the same tenant.
    pub fn idle_instances(&self) -> usize {
        self.shared.warm.idle_count()
    }

    /// Calls waiting for a slot.
    pub fn calls_queued(&self) -> usize {
        self.shared.admission.queued()
    }
}

/// The linear memory one instance of `component` starts with: what its
/// first call reserves of the memory budget (1 MiB when unknown).
fn initial_memory(component: &Component) -> u64 {
    component.resources_required().map_or(1 << 20, |needs| {
        u64::from(needs.num_memories.max(1)) * needs.max_initial_memory_size.unwrap_or(1 << 20)
    })
}

/// Hands the heap memory compiling left free back to the system. Compiling
/// a large component (a Python one is ~20 MB of wasm) frees hundreds of MiB
/// that glibc's allocator would otherwise keep: serving two Python
/// components, one of them just compiled, a server rested at 386 MiB
/// without this and 170 MiB with it (100 MiB with both from the cache).
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of
    // the allocator's own heap to the kernel, and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
