//! The [`Runtime`]: the engine and its instance pool, the capabilities, and
//! the loading of a component, in steps — grant its manifest, compile it
//! (or take it from the cache), link it, and ask it for its metadata.

use std::{path::Path, sync::Arc};

use wasmtime::component::{Component, Linker};

use super::{
    bindings::{self, PluginPre},
    call::{Admission, CallLimits, CallPool, Caller, WarmPool},
    capabilities::{Capabilities, Grants, HostState},
    component::WasmConnector,
    config::RuntimeConfig,
    engine,
    error::LoadError,
    memory::{self, BudgetGauges, MemoryBudget, MemoryEstimate},
};
use crate::{
    connector::{ConnectorInfo, Deadline},
    file_stamp::FileRead,
    manifest::{InstanceReuse, Manifest},
    metrics::{InstanceMetrics, Metrics},
};

struct Shared {
    pool: Arc<CallPool>,
    linker: Linker<HostState>,
    capabilities: Capabilities,
    instance_metrics: InstanceMetrics,
    config: RuntimeConfig,
}

/// Compiles and runs connector components. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl Runtime {
    /// Builds the engine and its instance pool, the memory budget, and the
    /// capabilities (which read what they need of the platform: CA
    /// certificates, proxies); what calls do is recorded into `metrics`.
    pub fn new(config: RuntimeConfig, metrics: Metrics) -> anyhow::Result<Self> {
        let capabilities = Capabilities::new(&config.capabilities, metrics.registry())?;
        let call_slots = config.call_slots.max(1);
        metrics
            .call_slots
            .set(i64::try_from(call_slots).unwrap_or(i64::MAX));
        metrics
            .queue_capacity
            .set(i64::try_from(config.max_queued_calls).unwrap_or(i64::MAX));
        let engine = engine::build(&engine::EngineSettings {
            slots: u32::try_from(call_slots).unwrap_or(u32::MAX),
            budget: config.slot_budget,
            memory_keep_resident: config.memory_keep_resident,
            max_memory_bytes: config.max_memory_bytes,
            cache_dir: config.cache_dir.clone(),
        })?;
        let linker = Capabilities::linker(&engine)?;
        let budget = memory_budget(&config, &metrics);
        let warm = WarmPool::new(config.reuse)?;
        let evictable = Arc::downgrade(&warm);
        budget.set_evict(Box::new(move || {
            evictable.upgrade().is_some_and(|warm| warm.evict_oldest())
        }));
        let pool = CallPool {
            engine,
            admission: Admission::new(call_slots, config.max_queued_calls),
            budget,
            warm,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                pool: Arc::new(pool),
                linker,
                capabilities,
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
        let (grants, files_read) = self.grant(path, manifest)?;
        let limits = self.limits_for(manifest).map_err(limits_error)?;
        let component = self.compile(path).await?;
        let contract = contract_of(&component, &self.shared.pool.engine, path)?;
        let slots = self.slots_per_call(&component).map_err(limits_error)?;
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
        let caller = Caller {
            pre,
            limits,
            grants: Arc::new(grants),
            slots,
            memory: Arc::new(MemoryEstimate::new(initial_memory(&component))),
            label: file_name,
            owner: self.shared.pool.warm.owner(),
            counters: None,
            pool: Arc::clone(&self.shared.pool),
        };
        let (info, sdk) = ask_metadata(&caller)
            .await
            .map_err(|source| LoadError::Metadata {
                path: shown.clone(),
                source,
            })?;
        tracing::info!(
            connector = info.name,
            contract = %contract,
            sdk,
            "loaded {shown}"
        );
        // From now on logs name the connector, not its file.
        let label: Arc<str> = Arc::from(info.name.as_str());
        let counters = Some(self.shared.instance_metrics.for_connector(&label));
        Ok(Arc::new(WasmConnector {
            info,
            source: shown,
            files_read,
            caller: Caller {
                label,
                counters,
                ..caller
            },
            return_limits: self.shared.config.return_limits,
        }))
    }

    /// What the capabilities grant the plugin of `manifest` (the component
    /// at `path`), and the files they read.
    fn grant(
        &self,
        path: &Path,
        manifest: &Manifest,
    ) -> Result<(Grants, Vec<FileRead>), LoadError> {
        let (grants, files_read) =
            self.shared
                .capabilities
                .grant(manifest)
                .map_err(|source| LoadError::Grant {
                    path: path.with_extension("toml").display().to_string(),
                    source,
                })?;
        if manifest.instance_reuse == InstanceReuse::Connection && grants.fill_connection() {
            tracing::warn!(
                "{}: instance_reuse = \"connection\" with [credentials]: a call whose connection \
                 lacks those keys gets the pod's, so every such call (from any project or \
                 domain; Flyte's open-source executor sends no connection) has the same \
                 connection map and they share this plugin's warm instances, and what one call \
                 leaves in an instance's memory",
                path.display()
            );
        }
        Ok((grants, files_read))
    }

    /// The component at `path`, compiled or from the cache, off the async
    /// threads (compiling takes a while).
    async fn compile(&self, path: &Path) -> Result<Component, LoadError> {
        let compile_error = |message| LoadError::Compile {
            path: path.display().to_string(),
            message,
        };
        let engine = self.shared.pool.engine.clone();
        let owned_path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let component = Component::from_file(&engine, owned_path);
            return_freed_memory();
            component
        })
        .await
        .map_err(|err| compile_error(err.to_string()))?
        .map_err(|err| compile_error(format!("{err:#}")))
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
                    "one instance's pool resources"
                );
                budget.slots_for(needs.num_memories, needs.num_tables)
            }
            // It imports core modules: unknown, so one slot; the pool makes
            // the call wait should it need more.
            None => 1,
        };
        let total = self.shared.pool.admission.total_slots();
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
        self.shared.pool.admission.running()
    }

    /// Call slots taken by running calls.
    pub fn slots_in_use(&self) -> usize {
        self.shared.pool.admission.slots_in_use()
    }

    /// Instances kept idle for later calls of the same tenant.
    pub fn idle_instances(&self) -> usize {
        self.shared.pool.warm.idle_count()
    }

    /// Calls waiting for a slot.
    pub fn calls_queued(&self) -> usize {
        self.shared.pool.admission.queued()
    }
}

/// The memory budget `config` asks for, its size logged and its use
/// recorded in `metrics`.
fn memory_budget(config: &RuntimeConfig, metrics: &Metrics) -> MemoryBudget {
    let (bytes, sized) = config.memory_budget.resolve(memory::current_limit);
    tracing::info!(
        "memory budget of the calls in flight: {} MiB ({sized})",
        bytes >> 20
    );
    metrics
        .memory_budget_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    MemoryBudget::new(
        bytes,
        Some(BudgetGauges {
            used: metrics.memory_budget_used_bytes.clone(),
            waiting: metrics.memory_budget_waiting.clone(),
        }),
    )
}

/// The connector's name and task types, and the SDK that built it, from
/// its `metadata` export, called in a fresh instance.
async fn ask_metadata(
    caller: &Caller,
) -> Result<(ConnectorInfo, String), crate::connector::ConnectorError> {
    let metadata = caller
        .call(
            "metadata",
            Deadline::NONE,
            None,
            (0, None),
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
        .await?;
    Ok(bindings::info(metadata))
}

/// The version of the contract `component` (at `path`) was built against,
/// from the name of its `flyte:connector/connector` export; a major this
/// host does not serve is refused, naming both.
fn contract_of(
    component: &Component,
    engine: &wasmtime::Engine,
    path: &Path,
) -> Result<Contract, LoadError> {
    let exported = component
        .component_type()
        .exports(engine)
        .find_map(|(name, _)| name.strip_prefix(CONNECTOR_EXPORT).map(str::to_owned));
    let Some(version) = exported else {
        return Err(LoadError::Link {
            path: path.display().to_string(),
            message: format!(
                "it exports no `{CONNECTOR_EXPORT}…` interface (build it with a flyte-connector SDK)"
            ),
        });
    };
    let major = version.split('.').next().unwrap_or_default();
    if major != SERVED_MAJOR {
        return Err(LoadError::Contract {
            path: path.display().to_string(),
            version,
            served_major: SERVED_MAJOR,
        });
    }
    Ok(Contract(version))
}

/// The name of the interface every connector exports, up to its version.
const CONNECTOR_EXPORT: &str = "flyte:connector/connector@";
/// The major version of the contract this host serves (`wit/connector.wit`).
const SERVED_MAJOR: &str = "1";

/// The contract version a component was built against.
struct Contract(String);

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flyte:connector@{}", self.0)
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
