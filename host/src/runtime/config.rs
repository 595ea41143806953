//! How the runtime is sized and what it allows ([`RuntimeConfig`]), every
//! default stated once, in its `Default`; the command line reads them here.

use std::{path::PathBuf, time::Duration};

use super::{
    call::ReuseLimits, capabilities::CapabilityConfig, engine, engine::SlotBudget,
    memory::BudgetSize, return_limits::ReturnLimits,
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
    /// place rather than handing back to the kernel (see `engine`).
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
    /// The server-wide settings of the capabilities manifests may grant.
    pub capabilities: CapabilityConfig,
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
            capabilities: CapabilityConfig::default(),
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
