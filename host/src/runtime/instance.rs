//! One instance of a component and the store it lives in.
//!
//! The store's state ([`InstanceState`]) lasts as long as the instance: the
//! WASI context, each capability's part (prepared through the capability
//! seam), the resource table, and its memory (the cap, which so applies
//! across the instance's whole life, and its charge against the memory
//! budget). What belongs to one call — the label of its
//! log lines and the start of its deadline — is installed by the call
//! itself with [`Instance::begin_call`], so an instance may serve several
//! calls of one tenant (see `warm`) without one call's scope leaking into
//! the next.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use wasmtime::{
    Store, UpdateDeadline,
    component::{Linker, ResourceTable},
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::{
    admission::Slots,
    bindings::Plugin,
    capability::{Capabilities, Grants, InstanceScope},
    guest_log::GuestLog,
    memory_budget::{Charge, InstanceMemory},
    outbound_http::InstanceHttp,
};

/// The host state of one instance's store.
pub(super) struct InstanceState {
    wasi: WasiCtx,
    http: InstanceHttp,
    table: ResourceTable,
    memory: InstanceMemory,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

/// The imports every connector is linked against: WASI Preview 2 (with no
/// files, sockets or name lookups granted) and each capability a manifest
/// may grant.
pub(super) fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Capabilities::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Marks a trap raised because the call ran past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub(super) struct DeadlineHit;

/// What every instance of one plugin is made with.
pub(super) struct InstanceRecipe<'a> {
    pub(super) engine: &'a wasmtime::Engine,
    pub(super) grants: &'a Grants,
    /// The connector's name, for logs and metric labels.
    pub(super) connector: &'a Arc<str>,
    /// Environment variables the guest sees.
    pub(super) env: &'a [(String, String)],
    /// The cap on the instance's linear memories, over its whole life.
    pub(super) memory_bytes: usize,
}

impl InstanceRecipe<'_> {
    /// A store for a new instance holding `charge` of the memory budget,
    /// and the log its output goes to.
    pub(super) fn store(&self, charge: Charge) -> (Store<InstanceState>, GuestLog) {
        let log = GuestLog::new(Arc::clone(self.connector));
        let wasi = WasiCtxBuilder::new()
            .stdout(log.clone())
            .stderr(log.clone())
            .envs(self.env)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let scope = InstanceScope {
            connector: Arc::clone(self.connector),
        };
        let capabilities = Capabilities::instance_states(self.grants, &scope);
        let state = InstanceState {
            wasi,
            http: capabilities.http,
            table: ResourceTable::new(),
            memory: InstanceMemory::new(self.memory_bytes, charge),
        };
        let mut store = Store::new(self.engine, state);
        store.limiter_async(|state| &mut state.memory);
        (store, log)
    }
}

/// An instance, its store, and the call slots it holds. Dropping it returns
/// the instance's memories and tables to the pool, reset, and then its slots.
pub(super) struct Instance {
    // Declared (so dropped) before the slots: the next call admitted finds
    // the pool's resources free.
    store: Store<InstanceState>,
    plugin: Plugin,
    log: GuestLog,
    calls: u32,
    _slots: Slots,
}

impl Instance {
    pub(super) fn new(
        store: Store<InstanceState>,
        plugin: Plugin,
        log: GuestLog,
        slots: Slots,
    ) -> Self {
        Self {
            store,
            plugin,
            log,
            calls: 0,
            _slots: slots,
        }
    }

    /// The log its output goes to.
    pub(super) fn log(&self) -> &GuestLog {
        &self.log
    }

    /// Calls it has begun.
    pub(super) fn calls(&self) -> u32 {
        self.calls
    }

    /// Bytes of linear memory it has.
    pub(super) fn memory_in_use(&self) -> u64 {
        self.store.data().memory.in_use()
    }

    /// Marks it running a call, or idle between calls (see `warm`): an idle
    /// instance's memory is given back only when it is evicted.
    pub(super) fn set_running(&mut self, running: bool) {
        self.store
            .data_mut()
            .memory
            .charge_mut()
            .set_running(running);
    }

    /// Installs a call's scope: its deadline counts from now (see
    /// [`arm_deadline`]). Returns the store and the exports to call.
    pub(super) fn begin_call(
        &mut self,
        deadline: Duration,
    ) -> (&mut Store<InstanceState>, &Plugin) {
        self.calls = self.calls.saturating_add(1);
        arm_deadline(&mut self.store, deadline);
        (&mut self.store, &self.plugin)
    }
}

/// Gives guest code in `store` `deadline` from now: each epoch tick the
/// callback yields to the executor (so other calls and the outer timeout
/// get to run), and traps once the deadline has passed. This stops guest
/// code that never returns to the host; instantiating runs under it too.
pub(super) fn arm_deadline(store: &mut Store<InstanceState>, deadline: Duration) {
    let started = Instant::now();
    store.epoch_deadline_callback(move |_| {
        if started.elapsed() >= deadline {
            Err(DeadlineHit.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
}
