//! The one wasmtime [`Engine`] of the process: component model, async guest
//! calls, epoch interruption for deadlines, the pooling allocator, and the
//! on-disk cache of compiled components.

use std::{path::PathBuf, thread, time::Duration};

use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig,
};

/// How often the epoch advances. Guest code yields to the async executor,
/// and its deadline is checked, once per tick.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Dirty linear-memory pages of a finished call that are reset by copying
/// rather than unmapped, per memory. Unmapping (`madvise`) makes the kernel
/// flush the TLBs of every core running this process, and the next call then
/// faults every page back in; copying a few hundred KiB is far cheaper.
/// Only dirty pages are copied where the kernel has `PAGEMAP_SCAN` (6.7+).
const MEMORY_KEEP_RESIDENT_SCAN: usize = 16 << 20;
/// Without `PAGEMAP_SCAN` this many bytes are copied on every reset, dirty
/// or not, so keep it to about a small guest's working set.
const MEMORY_KEEP_RESIDENT_NO_SCAN: usize = 1 << 20;
/// The same for tables (pointer-sized elements).
const TABLE_KEEP_RESIDENT: usize = 1 << 20;
/// Elements a table may have: interpreters compiled to wasm (componentize-py
/// ships CPython) have function tables of tens of thousands of entries.
/// Each table slot reserves this many pointers of address space.
const TABLE_ELEMENTS: usize = 50_000;
/// The most memories and tables one core module may define; a component's
/// instance may need more than one slot holds, and then takes several.
const MAX_MEMORIES_PER_MODULE: u32 = 16;
const MAX_TABLES_PER_MODULE: u32 = 32;
/// Core instance metadata (`vmctx`) size limit, generous for large modules.
const CORE_INSTANCE_SIZE: usize = 8 << 20;

/// What one call slot of the pool may hold. A component needing more for one
/// instance takes several slots per call (see [`SlotBudget::slots_for`]), so
/// the pool never runs out of one resource while slots remain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotBudget {
    /// Linear memories per slot.
    pub memories: u32,
    /// Tables per slot.
    pub tables: u32,
    /// Core module instances per slot.
    pub core_instances: u32,
}

impl Default for SlotBudget {
    fn default() -> Self {
        // A Rust component is one main module and a few shims (1 memory, 1-2
        // tables); a componentize-py one links a few dozen modules into one
        // memory. Core instances cost only a counter, memories and tables
        // reserve address space.
        Self {
            memories: 2,
            tables: 4,
            core_instances: 64,
        }
    }
}

impl SlotBudget {
    /// Slots one instance needing `memories` memories and `tables` tables
    /// takes (at least one).
    pub(super) fn slots_for(&self, memories: u32, tables: u32) -> u32 {
        memories
            .div_ceil(self.memories.max(1))
            .max(tables.div_ceil(self.tables.max(1)))
            .max(1)
    }
}

/// Pool sizing and cache location.
pub(super) struct EngineSettings {
    /// Call slots: component instances that may exist at once.
    pub(super) slots: u32,
    /// What each slot may hold.
    pub(super) budget: SlotBudget,
    /// Largest linear memory any instance may grow to.
    pub(super) max_memory_bytes: usize,
    /// Where compiled components are cached; `None` disables the cache.
    pub(super) cache_dir: Option<PathBuf>,
}

pub(super) fn build(settings: &EngineSettings) -> anyhow::Result<Engine> {
    let slots = settings.slots;
    let budget = settings.budget;
    let scan = PoolingAllocationConfig::is_pagemap_scan_available();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(budget.core_instances))
        .total_memories(slots.saturating_mul(budget.memories))
        .total_tables(slots.saturating_mul(budget.tables))
        .total_stacks(slots)
        .max_memories_per_module(MAX_MEMORIES_PER_MODULE)
        .max_tables_per_module(MAX_TABLES_PER_MODULE)
        .table_elements(TABLE_ELEMENTS)
        .max_core_instance_size(CORE_INSTANCE_SIZE)
        .max_memory_size(settings.max_memory_bytes)
        .pagemap_scan(if scan { Enabled::Yes } else { Enabled::No })
        .linear_memory_keep_resident(if scan {
            MEMORY_KEEP_RESIDENT_SCAN
        } else {
            MEMORY_KEEP_RESIDENT_NO_SCAN
        })
        .table_keep_resident(TABLE_KEEP_RESIDENT);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .wasm_wide_arithmetic(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(dir) = &settings.cache_dir {
        let mut cache = CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(Cache::new(cache)?));
    }
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine)?;
    Ok(engine)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|err| anyhow::anyhow!("cannot start the epoch thread: {err}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_takes_as_many_slots_as_its_largest_need() {
        let budget = SlotBudget {
            memories: 2,
            tables: 4,
            core_instances: 64,
        };
        assert_eq!(budget.slots_for(0, 0), 1);
        assert_eq!(budget.slots_for(1, 4), 1);
        assert_eq!(budget.slots_for(3, 1), 2);
        assert_eq!(budget.slots_for(1, 9), 3);
    }
}
