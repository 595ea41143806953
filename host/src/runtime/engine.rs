//! The one wasmtime [`Engine`] of the process: component model, async guest
//! calls, epoch interruption for deadlines, the pooling allocator, and the
//! on-disk cache of compiled components.

use std::{path::PathBuf, thread, time::Duration};

use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

/// How often the epoch advances. Guest code yields to the async executor,
/// and its deadline is checked, once per tick.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Pool sizing and cache location.
pub(super) struct EngineSettings {
    /// Component instances that may exist at once (one per call in flight).
    pub(super) instance_slots: u32,
    /// Largest linear memory any instance may grow to.
    pub(super) max_memory_bytes: usize,
    /// Where compiled components are cached; `None` disables the cache.
    pub(super) cache_dir: Option<PathBuf>,
}

pub(super) fn build(settings: &EngineSettings) -> anyhow::Result<Engine> {
    let slots = settings.instance_slots;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        // A Rust component has one main module plus a few small shims.
        .total_core_instances(slots.saturating_mul(8))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(slots)
        .max_memory_size(settings.max_memory_bytes);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
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
