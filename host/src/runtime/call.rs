//! One guest call: a fresh store and instance from the pre-linked component,
//! on the guest threads, inside a call slot, with the plugin's limits.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use wasmtime::{
    Engine, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
    component::{Linker, ResourceTable},
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::{
    Shared,
    bindings::{Plugin, PluginPre},
    guest_log::GuestLog,
    outbound_http::OutboundPolicy,
};
use crate::connector::ConnectorError;

/// What one plugin's calls may use.
#[derive(Debug, Clone)]
pub(super) struct CallLimits {
    pub(super) timeout: Duration,
    pub(super) memory_bytes: usize,
    pub(super) allowed_hosts: Vec<String>,
    pub(super) env: Vec<(String, String)>,
}

/// The host state of one call's store.
pub(super) struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_policy: OutboundPolicy,
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
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

/// The imports every connector is linked against: WASI Preview 2 (with no
/// files, sockets or name lookups granted) and `wasi:http/outgoing-handler`
/// behind the plugin's allow-list.
pub(super) fn linker(engine: &Engine) -> anyhow::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// The threads guest code runs on (`--worker`), apart from the threads
/// serving gRPC so a busy connector cannot stall health checks.
pub(super) struct GuestThreads {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl GuestThreads {
    pub(super) fn start(threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-guest")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Marks a trap raised because the call ran past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineHit;

/// Runs calls of one component.
pub(super) struct Caller {
    pub(super) pre: PluginPre<CallState>,
    pub(super) limits: CallLimits,
    /// Connector name (or file name before the name is known), for logs.
    pub(super) label: Arc<str>,
    pub(super) shared: Arc<Shared>,
}

impl Caller {
    /// Runs `body` in a fresh instance, within a call slot and the plugin's limits.
    pub(super) async fn call<T, F>(
        &self,
        operation: &'static str,
        body: F,
    ) -> Result<T, ConnectorError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut Store<CallState>,
                &'a Plugin,
            ) -> Pin<
                Box<dyn Future<Output = wasmtime::Result<Result<T, ConnectorError>>> + Send + 'a>,
            > + Send
            + 'static,
    {
        let permit = Arc::clone(&self.shared.slots)
            .try_acquire_owned()
            .map_err(|_| ConnectorError::Busy(self.shared.max_concurrent_calls))?;
        let log = GuestLog::new(Arc::clone(&self.label), operation);
        let store = self.new_store(log.clone());
        let pre = self.pre.clone();
        let timeout = self.limits.timeout;
        let label = Arc::clone(&self.label);
        let run = async move {
            let mut store = store;
            let started = Instant::now();
            let plugin = pre.instantiate_async(&mut store).await?;
            let instantiated = started.elapsed();
            let answer = body(&mut store, &plugin).await;
            tracing::debug!(
                connector = %label,
                operation,
                instantiate_us = instantiated.as_micros() as u64,
                total_us = started.elapsed().as_micros() as u64,
                "guest call"
            );
            answer
        };
        let task = self.shared.guest_threads.handle.spawn(async move {
            let outcome = tokio::time::timeout(timeout, run).await;
            drop(permit);
            outcome
        });
        let outcome = task.await;
        let printed = log.finish();
        match outcome {
            Ok(Ok(Ok(answer))) => answer,
            Ok(Ok(Err(trap))) => Err(classify_trap(&trap, timeout, &printed)),
            Ok(Err(_elapsed)) => Err(ConnectorError::DeadlineExceeded(timeout)),
            Err(join_error) => Err(ConnectorError::Crashed(format!(
                "the call was lost: {join_error}"
            ))),
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
        let state = CallState {
            wasi,
            http: WasiHttpCtx::new(),
            http_policy: OutboundPolicy::new(&self.limits.allowed_hosts, Arc::clone(&self.label)),
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
