//! The [`Runtime`]: the engine and its instance pool, the capabilities, and
//! the loading of a component, in steps — grant its manifest, compile it
//! (or take it from the cache), link it, and ask it for its metadata.

use std::{path::Path, sync::Arc};

use wasmtime::component::{Component, Linker};

use super::{
    bindings::{self, ExportsPre},
    call::{Admission, CallLimits, CallPool, Caller, ConcurrentInstances, GuestCall, WarmPool},
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
    /// The capabilities' imports, one linker per engine (see [`Engines`]).
    linkers: Linkers,
    capabilities: Capabilities,
    instance_metrics: InstanceMetrics,
    config: RuntimeConfig,
}

/// A linker per engine: the capabilities' imports, the same in both.
struct Linkers {
    sync: Linker<HostState>,
    concurrent: Linker<HostState>,
}

impl Linkers {
    fn of(&self, concurrent: bool) -> &Linker<HostState> {
        if concurrent {
            &self.concurrent
        } else {
            &self.sync
        }
    }
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
        let engines = engine::build_both(&engine::EngineSettings {
            slots: u32::try_from(call_slots).unwrap_or(u32::MAX),
            budget: config.slot_budget,
            memory_keep_resident: config.memory_keep_resident,
            max_memory_bytes: config.max_memory_bytes,
            cache_dir: config.cache_dir.clone(),
        })?;
        let linkers = Linkers {
            sync: Capabilities::linker(&engines.sync)?,
            concurrent: Capabilities::linker(&engines.concurrent)?,
        };
        let budget = memory_budget(&config, &metrics);
        let warm = WarmPool::new(config.reuse)?;
        let evictable = Arc::downgrade(&warm);
        budget.set_evict(Box::new(move || {
            evictable.upgrade().is_some_and(|warm| warm.evict_oldest())
        }));
        let pool = CallPool {
            engines,
            admission: Admission::new(call_slots, config.max_queued_calls),
            budget,
            warm,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                pool: Arc::new(pool),
                linkers,
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
        let (contract, component) = self.compile(path).await?;
        let concurrent = contract.world == World::Async;
        let slots = self.slots_per_call(&component).map_err(limits_error)?;
        let pre = self
            .shared
            .linkers
            .of(concurrent)
            .instantiate_pre(&component)
            .and_then(|pre| ExportsPre::new(pre, concurrent))
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
            owner: Arc::new(self.shared.pool.warm.owner()),
            concurrent: Arc::new(ConcurrentInstances::new(manifest.max_concurrent_calls)),
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

    /// The contract the component at `path` was built against, read from
    /// its imports and exports, and the component compiled (or from the
    /// cache) by the engine of its world, off the async threads (compiling
    /// takes a while).
    async fn compile(&self, path: &Path) -> Result<(Contract, Component), LoadError> {
        let compile_error = |message| LoadError::Compile {
            path: path.display().to_string(),
            message,
        };
        let engines = self.shared.pool.engines.clone();
        let owned_path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&owned_path).map_err(|err| LoadError::Compile {
                path: owned_path.display().to_string(),
                message: err.to_string(),
            })?;
            let contract = contract_of(&bytes, &owned_path)?;
            let engine = engines.of(contract.world == World::Async);
            let component = Component::new(engine, &bytes);
            return_freed_memory();
            component
                .map(|component| (contract, component))
                .map_err(|err| LoadError::Compile {
                    path: owned_path.display().to_string(),
                    message: format!("{err:#}"),
                })
        })
        .await
        .map_err(|err| compile_error(err.to_string()))?
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
            GuestCall::Sync(Box::new(|store, exports| {
                Box::pin(async move { Ok(Ok(exports.call_metadata(store).await?)) })
            })),
        )
        .await?;
    Ok(bindings::info(metadata))
}

/// The version and world of the contract the component `bytes` (at
/// `path`) was built against, from the name of its
/// `flyte:connector/connector` (or `async-connector`) export, read before
/// compiling it (which engine compiles it follows from its world). A major
/// this host does not serve is refused, naming both; so is a component of
/// the async world importing what would stop every call of its instance
/// while one waits.
fn contract_of(bytes: &[u8], path: &Path) -> Result<Contract, LoadError> {
    let shown = || path.display().to_string();
    let names = top_level_names(bytes).map_err(|err| LoadError::Compile {
        path: shown(),
        message: format!("not a WebAssembly component: {err}"),
    })?;
    let exported = names.exports.iter().find_map(|name| {
        let async_version = name.strip_prefix(ASYNC_CONNECTOR_EXPORT);
        let sync_version = name.strip_prefix(CONNECTOR_EXPORT);
        match (sync_version, async_version) {
            (Some(version), _) => Some((version.to_owned(), World::Sync)),
            (_, Some(version)) => Some((version.to_owned(), World::Async)),
            _ => None,
        }
    });
    let Some((version, world)) = exported else {
        return Err(LoadError::Link {
            path: shown(),
            message: format!(
                "it exports no `{CONNECTOR_EXPORT}…` or `{ASYNC_CONNECTOR_EXPORT}…` interface \
                 (build it with a flyte-connector SDK)"
            ),
        });
    };
    let major = version.split('.').next().unwrap_or_default();
    if major != SERVED_MAJOR {
        return Err(LoadError::Contract {
            path: shown(),
            version,
            served_major: SERVED_MAJOR,
        });
    }
    if world == World::Async
        && let Some(import) = names.imports.iter().find(|name| {
            BLOCKING_IMPORTS
                .iter()
                .any(|blocking| name.starts_with(blocking))
        })
    {
        return Err(LoadError::Link {
            path: shown(),
            message: format!(
                "it targets the async world but imports `{import}`, whose waits would stop \
                 every call of its instance; reach HTTP through `flyte:connector/waits`, or \
                 build it for the sync world"
            ),
        });
    }
    Ok(Contract { version, world })
}

/// The names a component imports and exports at its top level.
struct TopLevelNames {
    imports: Vec<String>,
    exports: Vec<String>,
}

/// Reads the top-level import and export names of the component `bytes`,
/// skipping the modules and components nested in it.
fn top_level_names(bytes: &[u8]) -> Result<TopLevelNames, wasmparser::BinaryReaderError> {
    use wasmparser::{ComponentExternName, Parser, Payload};
    fn full(name: ComponentExternName<'_>) -> String {
        format!("{}{}", name.name, name.version_suffix.unwrap_or_default())
    }
    let mut names = TopLevelNames {
        imports: Vec::new(),
        exports: Vec::new(),
    };
    // Nesting: each nested module or component's payloads end with an `End`.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    names.imports.push(full(import?.name));
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    names.exports.push(full(export?.name));
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The name of the interface a connector of the sync world exports, up to
/// its version.
const CONNECTOR_EXPORT: &str = "flyte:connector/connector@";
/// The same of the async world (since 1.3.0).
const ASYNC_CONNECTOR_EXPORT: &str = "flyte:connector/async-connector@";
/// Imports a component of the async world may not have: each waits on the
/// network with the whole store held.
const BLOCKING_IMPORTS: &[&str] = &[
    "wasi:http/outgoing-handler@",
    "flyte:connector/ssh@",
    "flyte:connector/storage@",
];
/// The major version of the contract this host serves (`wit/connector.wit`).
const SERVED_MAJOR: &str = "1";

/// Which world of the contract a component targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum World {
    /// `plugin`: one call per instance at a time.
    Sync,
    /// `async-plugin`: calls of one tenant at once.
    Async,
}

/// The contract version and world a component was built against.
struct Contract {
    version: String,
    world: World,
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.world {
            World::Sync => write!(f, "flyte:connector@{}", self.version),
            World::Async => write!(f, "flyte:connector@{} (async)", self.version),
        }
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
