//! One guest call: admission into the pool, a fresh store and instance from
//! the pre-linked component, the plugin's limits, and the classification of
//! whatever went wrong.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use wasmtime::{
    PoolConcurrencyLimitError, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
    component::{Linker, ResourceTable},
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::{
    Shared,
    bindings::{Plugin, PluginPre},
    capability::{CallScope, Capabilities, Capability, Grants},
    guest_log::GuestLog,
    outbound_http::{CallHttp, OutboundHttp},
};
use crate::connector::{ConnectorError, Deadline};

/// The limits of one plugin's calls, prepared once when it is loaded.
#[derive(Debug, Clone)]
pub(super) struct CallLimits {
    pub(super) timeout: Duration,
    pub(super) memory_bytes: usize,
    pub(super) env: Vec<(String, String)>,
}

/// The host state of one call's store.
pub(super) struct CallState {
    wasi: WasiCtx,
    http: CallHttp,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
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
pub(super) fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Capabilities::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Marks a trap raised because the call ran past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineHit;

/// The body of a call: what to do with the fresh instance.
pub(super) type CallBody<T> = Box<
    dyn for<'a> FnOnce(
            &'a mut Store<CallState>,
            &'a Plugin,
        ) -> Pin<
            Box<dyn Future<Output = wasmtime::Result<Result<T, ConnectorError>>> + Send + 'a>,
        > + Send,
>;

/// Runs calls of one component.
pub(super) struct Caller {
    pub(super) pre: PluginPre<CallState>,
    pub(super) limits: CallLimits,
    /// What the plugin's manifest grants, built once at load.
    pub(super) grants: Arc<Grants>,
    /// Call slots one instance takes (see [`super::SlotBudget`]).
    pub(super) slots: u32,
    /// Connector name (or file name before the name is known), for logs.
    pub(super) label: Arc<str>,
    pub(super) shared: Arc<Shared>,
}

impl Caller {
    /// Runs `body` in a fresh instance once the pool admits the call, within
    /// the plugin's limits. `function` names the call in logs.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        function: &'static str,
        deadline: Deadline,
        body: CallBody<T>,
    ) -> Result<T, ConnectorError> {
        let admitted = self.shared.admission.admit(self.slots, deadline).await?;
        let log = GuestLog::new(Arc::clone(&self.label), function);
        let timeout = self.limits.timeout;
        // Two deadlines on purpose: this timer stops a call waiting on host
        // I/O (an HTTP request that never answers); the epoch deadline set in
        // `new_store` stops guest code that never returns to the host.
        let outcome = tokio::time::timeout(timeout, self.run(function, body, log.clone())).await;
        // The instance went back to the pool when `run` ended, so the next
        // call admitted finds its resources free.
        drop(admitted);
        let printed = log.finish();
        match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(trap)) => Err(classify_trap(&trap, timeout, &printed)),
            Err(_elapsed) => Err(ConnectorError::DeadlineExceeded(timeout)),
        }
    }

    async fn run<T>(
        &self,
        function: &'static str,
        body: CallBody<T>,
        log: GuestLog,
    ) -> wasmtime::Result<Result<T, ConnectorError>> {
        let started = Instant::now();
        let mut store = self.new_store(log);
        let plugin = self.instantiate(&mut store).await?;
        let instantiated = started.elapsed();
        let answer = body(&mut store, &plugin).await;
        let called = started.elapsed();
        // Returns the instance's memories and tables to the pool, reset.
        drop(store);
        tracing::debug!(
            connector = %self.label,
            function,
            instantiate_us = instantiated.as_micros() as u64,
            call_us = (called - instantiated).as_micros() as u64,
            release_us = (started.elapsed() - called).as_micros() as u64,
            "guest call"
        );
        answer
    }

    /// Instantiates the component. Slot weights keep the pool's memories and
    /// tables from running out; should another pool resource (core
    /// instances) run out all the same, the call waits for running calls to
    /// give theirs back, as it waits for a busy slot, until its own deadline
    /// stops it. Alone in the pool, it never will fit: that is an error.
    async fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<Plugin> {
        let mut backoff = Duration::from_millis(1);
        loop {
            match self.pre.instantiate_async(&mut *store).await {
                Err(err)
                    if err.downcast_ref::<PoolConcurrencyLimitError>().is_some()
                        && self.shared.admission.running() > 1 =>
                {
                    tracing::debug!(connector = %self.label, "instance pool exhausted, waiting: {err}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn new_store(&self, log: GuestLog) -> Store<CallState> {
        let wasi = WasiCtxBuilder::new()
            .stdout(log.clone())
            .stderr(log)
            .envs(&self.limits.env)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let scope = CallScope {
            connector: Arc::clone(&self.label),
        };
        let state = CallState {
            wasi,
            http: OutboundHttp::call_state(&self.grants.http, &scope),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.shared.engine, state);
        store.limiter(|state| &mut state.limits);
        // Each epoch tick, yield to the executor so other calls and the
        // outer timeout get to run; past the deadline, trap. This also stops
        // guest code that never returns to the host.
        let started = Instant::now();
        let deadline = self.limits.timeout;
        store.epoch_deadline_callback(move |_| {
            if started.elapsed() >= deadline {
                Err(DeadlineHit.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        store
    }
}

/// Turns a trap into the error the client sees, with what the guest printed
/// last (a Rust panic prints its message there).
fn classify_trap(trap: &wasmtime::Error, timeout: Duration, printed: &[String]) -> ConnectorError {
    if trap.downcast_ref::<DeadlineHit>().is_some() {
        return ConnectorError::DeadlineExceeded(timeout);
    }
    if let Some(limit) = trap.downcast_ref::<PoolConcurrencyLimitError>() {
        return ConnectorError::Crashed(format!(
            "one instance of this component does not fit in the whole instance pool ({limit}); \
             raise --pool-core-instances-per-slot"
        ));
    }
    let reason = match trap.downcast_ref::<Trap>() {
        Some(code) => code.to_string(),
        None => format!("{trap:#}"),
    };
    let printed: Vec<&str> = printed
        .iter()
        .map(String::as_str)
        .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    if printed.is_empty() {
        ConnectorError::Crashed(reason)
    } else {
        ConnectorError::Crashed(format!("{reason}; it printed: {}", printed.join("\n")))
    }
}
