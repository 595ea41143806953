//! The one wasmtime [`Engine`] of the process: component model, async guest
//! calls, epoch interruption for deadlines, the pooling allocator, and the
//! on-disk cache of compiled components.
//!
//! # How a slot becomes fresh again
//!
//! Every call gets a fresh instance, and no call may observe memory an
//! earlier call wrote. When an instance is dropped, wasmtime resets its
//! linear memories and tables in the pool: the first
//! [`EngineSettings::memory_keep_resident`] bytes of each memory (and
//! [`TABLE_KEEP_RESIDENT`] of each table) are rewritten in place, from the
//! memory image or with zeros, and the rest is handed back to the kernel
//! with `madvise(MADV_DONTNEED)`. Both touch every page, whatever state the
//! kernel holds it in: a write faults a swapped-out page back in before
//! overwriting it, and `MADV_DONTNEED` drops swap and migration entries
//! as well as resident pages.
//!
//! wasmtime can instead rewrite only the pages the kernel reports dirty
//! (`PAGEMAP_SCAN`, Linux 6.7+), and this engine used to. In wasmtime 48
//! that scan asks for pages that are written *and present*: a dirty page
//! that was swapped out, or was being migrated, at the moment of the scan
//! is skipped, and the next instance in the slot reads the previous call's
//! data back (or, for a table, its stale function references). So the scan
//! is never used here ([`Enabled::No`]), on any kernel. wasmtime 48.0.11
//! backports the fix (it asks for written pages that are present *or*
//! swapped), and wasmtime 50 also resumes the scan past its 32-region
//! window; this build is on 48.0.10, whose scan still has the flaw, because
//! the registry these machines build from has no 48.0.11 of the crates
//! wasmtime's component model needs (`wasmtime-internal-wit-bindgen`) nor of
//! wasmtime-wasi. Once it does, the scan is worth measuring again.
//!
//! What the rewrite costs depends on how much of a memory a guest spans,
//! not on how much it wrote; so our Rust components link a 128 KiB stack
//! instead of the toolchain's 1 MiB (`.cargo/config.toml`), and a call of
//! the echo connector resets about as fast as with the scan.

use std::{path::PathBuf, thread, time::Duration};

use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig,
};

/// How often the epoch advances. Guest code yields to the async executor,
/// and its deadline is checked, once per tick.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default of [`EngineSettings::memory_keep_resident`]: all of a Rust
/// component's memory (its stack, data and the heap of a call), so its
/// reset never makes the kernel flush every core's TLB, while a Python
/// component's tens of MiB are mostly handed back rather than copied.
pub(super) const DEFAULT_MEMORY_KEEP_RESIDENT: usize = 2 << 20;
/// Bytes of each table (pointer-sized elements) a reset rewrites in place.
const TABLE_KEEP_RESIDENT: usize = 1 << 20;
/// Bytes at the top of each fiber stack (where a call's frames are) that
/// zeroing rewrites in place; the rest of the stack is handed back to the
/// kernel. Handing back pages a call touched makes the kernel flush every
/// core's TLB: with nothing kept, 256 clients of the echo connector made
/// 36% fewer calls than without zeroing; with 128 KiB kept, as many within
/// the noise (docs/design/performance.md).
const ASYNC_STACK_KEEP_RESIDENT: usize = 128 << 10;
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
    /// Bytes at the start of each linear memory a reset rewrites in place;
    /// the rest is handed back to the kernel.
    pub(super) memory_keep_resident: usize,
    /// Largest linear memory any instance may grow to.
    pub(super) max_memory_bytes: usize,
    /// Where compiled components are cached; `None` disables the cache.
    pub(super) cache_dir: Option<PathBuf>,
}

/// The instance pool: sized from `settings`, reset without the pagemap scan.
fn pool_config(settings: &EngineSettings) -> PoolingAllocationConfig {
    let slots = settings.slots;
    let budget = settings.budget;
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
        .pagemap_scan(Enabled::No)
        .linear_memory_keep_resident(settings.memory_keep_resident)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .async_stack_keep_resident(ASYNC_STACK_KEEP_RESIDENT);
    pool
}

/// The engines of the two worlds of the contract: the async world's runs
/// calls concurrently (the component model's async ABI), the sync world's
/// does not, so that its calls never pay for the concurrent machinery
/// (wasmtime routes every call of an engine with concurrency support
/// through its event loop: ≈ 15 % of a Rust echo's throughput).
#[derive(Clone)]
pub(super) struct Engines {
    /// For components of `plugin`.
    pub(super) sync: Engine,
    /// For components of `async-plugin`.
    pub(super) concurrent: Engine,
}

impl Engines {
    /// The engine of a world.
    pub(super) fn of(&self, concurrent: bool) -> &Engine {
        if concurrent {
            &self.concurrent
        } else {
            &self.sync
        }
    }
}

/// Both engines, each with an instance pool of `settings` (the call slots
/// bound how many instances exist in both together).
pub(super) fn build_both(settings: &EngineSettings) -> anyhow::Result<Engines> {
    Ok(Engines {
        sync: build(settings, false)?,
        concurrent: build(settings, true)?,
    })
}

fn build(settings: &EngineSettings, concurrent: bool) -> anyhow::Result<Engine> {
    let pool = pool_config(settings);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .wasm_component_model_async(concurrent)
        .concurrency_support(concurrent)
        .wasm_wide_arithmetic(true)
        .epoch_interruption(true)
        // Fiber stacks are pooled and reused across calls of every plugin:
        // zeroed before each use, no call can read what an earlier one left
        // on its stack, whatever a compiler bug might let it read.
        .async_stack_zeroing(true)
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
    fn the_reset_never_relies_on_the_pagemap_scan() {
        // The whole pool configuration, as wasmtime prints it: the scan is
        // off even on a kernel that has it.
        let settings = EngineSettings {
            slots: 2,
            budget: SlotBudget::default(),
            memory_keep_resident: DEFAULT_MEMORY_KEEP_RESIDENT,
            max_memory_bytes: 64 << 20,
            cache_dir: None,
        };
        let shown = format!("{:?}", pool_config(&settings));
        assert!(shown.contains("pagemap_scan: No"), "{shown}");
    }

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
