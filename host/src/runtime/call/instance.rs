//! One instance of a component and the store it lives in.
//!
//! The store's data (`store::InstanceState`) lasts as long as the
//! instance: its memory cap and budget charge so apply across the
//! instance's whole life. What belongs to one call — the label of its log
//! lines and the start of its deadline — is installed by the call itself
//! with [`Instance::begin_call`], so an instance may serve several calls of
//! one tenant (see `warm`) without one call's scope leaking into the next.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use super::{admission::Slots, guest_log::GuestLog};
use crate::connector::Deadline;
use crate::runtime::{
    bindings::Exports,
    capabilities::{CallScope, Grants, HostState, InstanceScope},
    memory::{Charge, InstanceMemory},
    store::InstanceState,
};

/// Marks a trap raised because the call ran past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub(in crate::runtime) struct DeadlineHit;

/// What every instance of one plugin is made with.
pub(in crate::runtime) struct InstanceRecipe<'a> {
    pub(in crate::runtime) engine: &'a wasmtime::Engine,
    pub(in crate::runtime) grants: &'a Grants,
    /// The connector's name, for logs and metric labels.
    pub(in crate::runtime) connector: &'a Arc<str>,
    /// Environment variables the guest sees.
    pub(in crate::runtime) env: &'a [(String, String)],
    /// The cap on the instance's linear memories, over its whole life.
    pub(in crate::runtime) memory_bytes: usize,
}

impl InstanceRecipe<'_> {
    /// A store for a new instance holding `charge` of the memory budget,
    /// and the log its output goes to.
    pub(in crate::runtime) fn store(&self, charge: Charge) -> (Store<HostState>, GuestLog) {
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
        let state = InstanceState::new(
            wasi,
            InstanceMemory::new(self.memory_bytes, charge),
            self.grants.instance_states(&scope),
        );
        let mut store = Store::new(self.engine, state);
        store.limiter_async(|state| state.memory_mut());
        (store, log)
    }
}

/// An instance, its store, and the call slots it holds. Dropping it returns
/// the instance's memories and tables to the pool, reset, and then its slots.
pub(in crate::runtime) struct Instance {
    // Declared (so dropped) before the slots: the next call admitted finds
    // the pool's resources free.
    store: Store<HostState>,
    exports: Exports,
    log: GuestLog,
    calls: u32,
    _slots: Slots,
}

impl Instance {
    pub(in crate::runtime) fn new(
        store: Store<HostState>,
        exports: Exports,
        log: GuestLog,
        slots: Slots,
    ) -> Self {
        Self {
            store,
            exports,
            log,
            calls: 0,
            _slots: slots,
        }
    }

    /// The log its output goes to.
    pub(in crate::runtime) fn log(&self) -> &GuestLog {
        &self.log
    }

    /// Calls it has begun.
    pub(in crate::runtime) fn calls(&self) -> u32 {
        self.calls
    }

    /// Bytes of linear memory it has.
    pub(in crate::runtime) fn memory_in_use(&self) -> u64 {
        self.store.data().memory().in_use()
    }

    /// Marks it running a call, or idle between calls (see `warm`): an idle
    /// instance's memory is given back only when it is evicted.
    pub(in crate::runtime) fn set_running(&mut self, running: bool) {
        self.store
            .data_mut()
            .memory_mut()
            .charge_mut()
            .set_running(running);
    }

    /// Installs a call's scope: its `timeout` counts from now (see
    /// [`arm_deadline`]), and the capabilities learn when its time is up
    /// (the timeout, or the client's deadline if sooner) and where its
    /// outputs go. Returns the store and the exports to call.
    pub(in crate::runtime) fn begin_call(
        &mut self,
        timeout: Duration,
        client: Deadline,
        output_prefix: Option<Arc<str>>,
    ) -> (&mut Store<HostState>, &Exports) {
        self.calls = self.calls.saturating_add(1);
        arm_deadline(&mut self.store, timeout);
        let scope = CallScope {
            deadline: super::call_deadline(timeout, client),
            output_prefix,
        };
        let (capabilities, _, _) = self.store.data_mut().capabilities_and_table();
        capabilities.begin_call(&scope);
        (&mut self.store, &self.exports)
    }

    /// Its store, to arm before a driver runs it (see `concurrent`).
    pub(in crate::runtime) fn store_mut(&mut self) -> &mut Store<HostState> {
        &mut self.store
    }

    /// Its store, its exports and its count of calls, for the driver that
    /// runs calls in it at once; each call there brings its own scope.
    pub(in crate::runtime) fn parts_for_driver(
        &mut self,
    ) -> (&mut Store<HostState>, &Exports, &mut u32) {
        (&mut self.store, &self.exports, &mut self.calls)
    }
}

/// Gives guest code in `store` `deadline` from now: each epoch tick the
/// callback yields to the executor (so other calls and the outer timeout
/// get to run), and traps once the deadline has passed. This stops guest
/// code that never returns to the host; instantiating runs under it too.
pub(in crate::runtime) fn arm_deadline(store: &mut Store<HostState>, deadline: Duration) {
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
