//! What one instance's store holds ([`InstanceState`]): the WASI context
//! (no files, sockets or name lookups; stdout and stderr go to the call's
//! log), the resource table every import shares, the instance's memory (its
//! cap and its charge against the memory budget), and each capability's
//! state. Generic over the capabilities' states, so that neither the
//! capabilities (whose imports reach their state through it) nor the call
//! machinery (which makes it) need to know the other.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{capabilities::ConcurrentCalls, memory::InstanceMemory};

/// The data of one instance's store; `S` holds the capabilities' states.
pub(super) struct InstanceState<S> {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: InstanceMemory,
    capabilities: S,
    calls: ConcurrentCalls,
}

impl<S> InstanceState<S> {
    pub(super) fn new(wasi: WasiCtx, memory: InstanceMemory, capabilities: S) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            memory,
            capabilities,
            calls: ConcurrentCalls::default(),
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

    /// The capabilities' states, the resource table and the calls served
    /// at once.
    pub(super) fn capabilities_and_table(
        &mut self,
    ) -> (&mut S, &mut ResourceTable, &ConcurrentCalls) {
        (&mut self.capabilities, &mut self.table, &self.calls)
    }

    /// The calls of the async world the instance serves now.
    pub(super) fn calls(&self) -> &ConcurrentCalls {
        &self.calls
    }

    /// The same, to register or forget one.
    pub(super) fn calls_mut(&mut self) -> &mut ConcurrentCalls {
        &mut self.calls
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
