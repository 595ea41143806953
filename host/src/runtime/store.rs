//! What one instance's store holds ([`InstanceState`]): the WASI context
//! (no files, sockets or name lookups; stdout and stderr go to the call's
//! log), the resource table every import shares, the instance's memory (its
//! cap and its charge against the memory budget), and each capability's
//! state. Generic over the capabilities' states, so that neither the
//! capabilities (whose imports reach their state through it) nor the call
//! machinery (which makes it) need to know the other.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::memory::InstanceMemory;

/// The data of one instance's store; `S` holds the capabilities' states.
pub(super) struct InstanceState<S> {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: InstanceMemory,
    capabilities: S,
}

impl<S> InstanceState<S> {
    pub(super) fn new(wasi: WasiCtx, memory: InstanceMemory, capabilities: S) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            memory,
            capabilities,
        }
    }

    /// The instance's memory.
    pub(super) fn memory(&self) -> &InstanceMemory {
        &self.memory
    }

    /// The instance's memory, as the store's limiter and the call use it.
    pub(super) fn memory_mut(&mut self) -> &mut InstanceMemory {
        &mut self.memory
    }

    /// The capabilities' states and the resource table.
    pub(super) fn capabilities_and_table(&mut self) -> (&mut S, &mut ResourceTable) {
        (&mut self.capabilities, &mut self.table)
    }
}

impl<S: Send + 'static> WasiView for InstanceState<S> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
