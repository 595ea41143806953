//! Guest calls: [`Caller`] runs one call of one component in an instance
//! (a warm one of the same tenant, or a fresh one once the pool admits the
//! call), with the call's scope installed on it and the plugin's limits,
//! classifies whatever went wrong, and decides what becomes of the instance
//! after. What every call shares is the [`CallPool`].
//!
//! - `admission`: call slots and the queue of calls waiting for one.
//! - `instance`: an instance and its store, and the scope each call
//!   installs on it.
//! - `warm`: idle instances kept for later calls of the same tenant.
//! - `guest_log`: a guest's stdout and stderr, into the host's log.
//! - `concurrent`: calls of the async world, several of one tenant in one
//!   instance at once.

mod admission;
mod concurrent;
mod guest_log;
mod instance;
mod warm;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::Instrument as _;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap};

pub use self::warm::{IdleLimit, ReuseLimits};
pub(in crate::runtime) use self::{
    admission::Admission,
    concurrent::{ConcurrentBody, ConcurrentInstances, enter},
    guest_log::GuestLog,
    instance::Instance,
    warm::{Owner, WarmPool},
};
use self::{
    admission::Slots,
    concurrent::{DriverContext, Stop},
    instance::{DeadlineHit, InstanceRecipe, arm_deadline},
    warm::TenantKey,
};
use super::{
    bindings::{self, Exports, ExportsPre},
    capabilities::{CallArgs, CallEnd, CallScope, ConcurrentCall, Grants, HostState},
    engine::Engines,
    memory::{BudgetError, MemoryBudget, MemoryEstimate, OverCap},
};
use crate::{
    connector::{ConnectionMap, ConnectorError, Deadline},
    manifest::InstanceReuse,
    metrics::InstanceCounters,
};

/// What every call of every component shares: the engine, the call slots
/// and their queue, the memory budget, and the warm instances.
pub(in crate::runtime) struct CallPool {
    pub(in crate::runtime) engines: Engines,
    pub(in crate::runtime) admission: Admission,
    pub(in crate::runtime) budget: MemoryBudget,
    pub(in crate::runtime) warm: Arc<WarmPool<Instance>>,
}

/// The limits of one plugin's calls, prepared once when it is loaded.
#[derive(Debug, Clone)]
pub(in crate::runtime) struct CallLimits {
    pub(in crate::runtime) timeout: Duration,
    pub(in crate::runtime) memory_bytes: usize,
    pub(in crate::runtime) env: Vec<(String, String)>,
    pub(in crate::runtime) reuse: InstanceReuse,
}

/// The body of a call of the sync world: what to do with the instance.
pub(in crate::runtime) type CallBody<T> = Box<
    dyn for<'a> FnOnce(
            &'a mut Store<HostState>,
            &'a Exports,
        ) -> Pin<
            Box<dyn Future<Output = wasmtime::Result<Result<T, ConnectorError>>> + Send + 'a>,
        > + Send,
>;

/// A call, as its component's world makes it.
pub(in crate::runtime) enum GuestCall<T> {
    /// Alone in its instance (the sync world; the metadata call of both).
    Sync(CallBody<T>),
    /// Among others of its tenant (the async world).
    Concurrent(ConcurrentBody<T>),
}

/// Runs calls of one component.
pub(in crate::runtime) struct Caller {
    pub(in crate::runtime) pre: ExportsPre,
    pub(in crate::runtime) limits: CallLimits,
    /// What the plugin's manifest grants, built once at load.
    pub(in crate::runtime) grants: Arc<Grants>,
    /// Call slots one instance takes (see [`crate::runtime::SlotBudget`]).
    pub(in crate::runtime) slots: u32,
    /// What a fresh instance reserves of the memory budget.
    pub(in crate::runtime) memory: Arc<MemoryEstimate>,
    /// Connector name (or file name before the name is known), for logs.
    pub(in crate::runtime) label: Arc<str>,
    /// This loaded version of the component, as the warm pool knows it.
    pub(in crate::runtime) owner: Arc<Owner<Instance>>,
    /// Its instances serving calls at once (the async world).
    pub(in crate::runtime) concurrent: Arc<ConcurrentInstances>,
    /// Fresh and reused instances, counted by connector (not for the
    /// metadata call of a load).
    pub(in crate::runtime) counters: Option<InstanceCounters>,
    pub(in crate::runtime) pool: Arc<CallPool>,
}

/// What a call runs in.
enum Start {
    /// A warm instance of the same tenant.
    Warm(Instance),
    /// A new instance, in a new store, on slots just admitted.
    Fresh {
        store: Store<HostState>,
        log: GuestLog,
        slots: Slots,
    },
}

impl Start {
    /// The log of the instance it is or will be.
    fn log(&self) -> &GuestLog {
        match self {
            Self::Warm(instance) => instance.log(),
            Self::Fresh { log, .. } => log,
        }
    }
}

/// Gives its call up when dropped (its client left, its time ran out):
/// the call's waits in the guest end at once, and no call joins its
/// instance until it has unwound. A call that answered is ended already,
/// and stays so.
struct GiveUpOnDrop {
    call: Arc<ConcurrentCall>,
    driver: Arc<concurrent::Driver>,
    instances: Arc<ConcurrentInstances>,
}

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        if self.call.ended().is_some() {
            return;
        }
        // Counted before the call ends: once it has, its guest may unwind
        // and its driver count it unwound at once.
        self.instances.given_up(&self.driver);
        if !self.call.end(CallEnd::GivenUp) {
            // It answered meanwhile: it was not given up after all.
            self.instances.unwound(&self.driver);
        }
    }
}

/// When a call's time is up: its `timeout` from now, or the client's
/// `deadline` if sooner.
fn call_deadline(timeout: Duration, client: Deadline) -> Option<Instant> {
    let ends = Instant::now().checked_add(timeout);
    match (ends, client.instant()) {
        (Some(ends), Some(client)) => Some(ends.min(client)),
        (ends, client) => ends.or(client),
    }
}

impl Caller {
    /// Lets the capabilities complete the call's merged connection map (the
    /// pod's credentials fill in what it lacks), then says who the call is
    /// for, if the plugin opted into reuse: calls of one tenant (the very
    /// same completed map) may share instances.
    pub(in crate::runtime) fn complete_connection(
        &self,
        connection: &mut ConnectionMap,
    ) -> Option<TenantKey> {
        self.grants.shape_call(&mut CallArgs { connection });
        match self.limits.reuse {
            InstanceReuse::Connection => Some(self.pool.warm.key_of(connection)),
            InstanceReuse::Never => None,
        }
    }

    /// Whether calls of this component may share an instance at once (it
    /// targets the async world).
    pub(in crate::runtime) fn is_concurrent(&self) -> bool {
        self.pre.is_concurrent()
    }

    /// Runs `call` within the plugin's limits: for a `tenant` (see
    /// [`Self::complete_connection`]), in an instance of this component
    /// version that served the same tenant if one is idle — or, in the
    /// async world, is serving it now with room for one more call — and the
    /// instance is kept for the tenant's next call after; else in a fresh
    /// instance once the pool admits the call, and that instance serves no
    /// other tenant. `function` names the call in logs; `output_prefix` is
    /// where its task's outputs go, when the request says.
    pub(in crate::runtime) async fn call<T: Send + 'static>(
        &self,
        function: &'static str,
        deadline: Deadline,
        key: Option<TenantKey>,
        (request_bytes, output_prefix): (u64, Option<Arc<str>>),
        call: GuestCall<T>,
    ) -> Result<T, ConnectorError> {
        // The request is in memory already: charged from now to the end.
        let _request = self.pool.budget.charge_request(request_bytes)?;
        // How many idle instances the component may keep follows this.
        let _in_flight = key.map(|_| self.owner.call_started());
        match call {
            GuestCall::Sync(body) => {
                self.call_alone(function, deadline, key, output_prefix, body)
                    .await
            }
            GuestCall::Concurrent(body) => {
                self.call_among_others(function, deadline, key, output_prefix, body)
                    .await
            }
        }
    }

    /// A call of the sync world: the instance is its own until it answers.
    async fn call_alone<T: Send + 'static>(
        &self,
        function: &'static str,
        deadline: Deadline,
        key: Option<TenantKey>,
        output_prefix: Option<Arc<str>>,
        body: CallBody<T>,
    ) -> Result<T, ConnectorError> {
        let start = self.start(deadline, key).await?;
        let log = start.log().clone();
        log.begin(function);
        let running = self.pool.admission.start_running();
        let timeout = self.limits.timeout;
        // Two deadlines on purpose: this timer stops a call waiting on host
        // I/O (an HTTP request that never answers); the epoch deadline
        // (`arm_deadline`) stops guest code that never returns to the host.
        // Past it the instance is dropped with the future.
        let outcome = tokio::time::timeout(
            timeout,
            self.run(function, start, key, (deadline, output_prefix), body),
        )
        .await;
        drop(running);
        match outcome {
            Ok((Ok(answer), _)) => answer,
            Ok((Err(trap), printed)) => Err(classify_trap(&trap, timeout, &printed)),
            Err(_elapsed) => {
                log.finish();
                Err(ConnectorError::DeadlineExceeded(timeout))
            }
        }
    }

    /// A call of the async world: it joins a running instance of its
    /// tenant with room, else starts one (see `concurrent`), and answers
    /// when its task does; given up when its time is up or its client
    /// leaves (the future is dropped), which ends its waits in the guest.
    async fn call_among_others<T: Send + 'static>(
        &self,
        function: &'static str,
        deadline: Deadline,
        key: Option<TenantKey>,
        output_prefix: Option<Arc<str>>,
        body: ConcurrentBody<T>,
    ) -> Result<T, ConnectorError> {
        // Its time counts from now, in the host as in the guest.
        let arrived = tokio::time::Instant::now();
        let timeout = self.limits.timeout;
        let log = GuestLog::new(Arc::clone(&self.label));
        log.begin(function);
        let scope = CallScope {
            deadline: call_deadline(timeout, deadline),
            output_prefix,
        };
        let guest_call = crate::trace_span!("guest_call", function);
        let call = Arc::new(ConcurrentCall::new(scope, log.clone(), guest_call.clone()));
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = concurrent::job(body, Arc::clone(&call), reply);
        let driver = match self.concurrent.join(key, job) {
            Ok(driver) => {
                if let Some(counters) = &self.counters {
                    counters.reused.inc();
                }
                driver
            }
            Err(job) => {
                let max_calls = self.pool.warm.limits().max_calls_per_instance;
                let (driver, opening) = self.concurrent.open(key, max_calls, job);
                let instance = match self.start(deadline, key).await {
                    Ok(start) => self
                        .instance(start)
                        .await
                        .map_err(|(trap, printed)| classify_trap(&trap, timeout, &printed)),
                    Err(error) => Err(error),
                };
                match instance {
                    Ok(instance) => {
                        let context = DriverContext {
                            pool: Arc::clone(&self.pool),
                            owner: Arc::clone(&self.owner),
                            instances: Arc::clone(&self.concurrent),
                            memory: Arc::clone(&self.memory),
                            label: Arc::clone(&self.label),
                        };
                        opening.run(instance, context);
                    }
                    Err(error) => {
                        opening.refuse(error.clone());
                        return Err(error);
                    }
                }
                driver
            }
        };
        let give_up = GiveUpOnDrop {
            call: Arc::clone(&call),
            driver: Arc::clone(&driver),
            instances: Arc::clone(&self.concurrent),
        };
        let running = self.pool.admission.start_running();
        let outcome = tokio::time::timeout_at(arrived + timeout, answer)
            .instrument(guest_call)
            .await;
        drop(running);
        match outcome {
            Ok(Ok(Ok(answer))) => {
                log.finish();
                answer
            }
            Ok(Ok(Err(trap))) => Err(classify_trap(&trap, timeout, &log.finish())),
            // The driver stopped before answering: its instance trapped,
            // or could not be had.
            Ok(Err(_dropped)) => {
                let printed = log.finish();
                match driver.stopped().await {
                    Stop::NotStarted(error) => Err(error),
                    Stop::Trap(trap)
                        if trap.downcast_ref::<DeadlineHit>().is_some()
                            && !call.overdue(Instant::now()) =>
                    {
                        Err(ConnectorError::Crashed(
                            "another call in its instance ran past its deadline without \
                             waiting, and the instance was stopped"
                                .to_owned(),
                        ))
                    }
                    Stop::Trap(trap) => Err(classify_trap(&trap, timeout, &printed)),
                }
            }
            Err(_elapsed) => {
                drop(give_up);
                log.finish();
                Err(ConnectorError::DeadlineExceeded(timeout))
            }
        }
    }

    /// What a call starts from: an idle instance of `key`'s tenant, or
    /// (once the pool admits the call, by its `deadline`) slots, memory
    /// and a store for a fresh one.
    async fn start(
        &self,
        deadline: Deadline,
        key: Option<TenantKey>,
    ) -> Result<Start, ConnectorError> {
        if let Some(mut instance) = key.and_then(|key| self.pool.warm.take(&self.owner, key)) {
            if let Some(counters) = &self.counters {
                counters.reused.inc();
            }
            instance.set_running(true);
            return Ok(Start::Warm(instance));
        }
        // Waiting for a call slot and for memory of the budget.
        let (slots, charge) = async {
            let slots = self.admit(deadline).await?;
            let charge = self
                .pool
                .budget
                .reserve(self.memory.reservation(), deadline)
                .await?;
            Ok::<_, ConnectorError>((slots, charge))
        }
        .instrument(crate::trace_span!("queue"))
        .await?;
        if let Some(counters) = &self.counters {
            counters.fresh.inc();
        }
        let (store, log) = self.recipe().store(charge);
        Ok(Start::Fresh { store, log, slots })
    }

    /// The instance a call runs in: the warm one, or the fresh one
    /// instantiated; or the instantiation's error and what it printed.
    async fn instance(&self, start: Start) -> Result<Instance, (wasmtime::Error, Vec<String>)> {
        let reused = matches!(start, Start::Warm(_));
        let instantiating = crate::trace_span!(
            "instantiate",
            start = if reused { "reused" } else { "fresh" }
        );
        match start {
            Start::Warm(instance) => Ok(instance),
            Start::Fresh {
                mut store,
                log,
                slots,
            } => {
                arm_deadline(&mut store, self.limits.timeout);
                match self.instantiate(&mut store).instrument(instantiating).await {
                    Ok(exports) => Ok(Instance::new(store, exports, log, slots)),
                    Err(err) => Err((err, log.finish())),
                }
            }
        }
    }

    /// Runs the call in its instance, then keeps the instance for `key` if
    /// it may serve another call, or drops it. Returns the answer and the
    /// last lines the call printed.
    async fn run<T>(
        &self,
        function: &'static str,
        start: Start,
        key: Option<TenantKey>,
        (deadline, output_prefix): (Deadline, Option<Arc<str>>),
        body: CallBody<T>,
    ) -> (wasmtime::Result<Result<T, ConnectorError>>, Vec<String>) {
        let started = Instant::now();
        let reused = matches!(start, Start::Warm(_));
        let mut instance = match self.instance(start).await {
            Ok(instance) => instance,
            Err((err, printed)) => return (Err(err), printed),
        };
        let instantiated = started.elapsed();
        let (store, exports) = instance.begin_call(self.limits.timeout, deadline, output_prefix);
        let answer = body(store, exports)
            .instrument(crate::trace_span!("guest_call", function))
            .await;
        let called = started.elapsed();
        let memory = instance.memory_in_use();
        self.memory.observe(memory);
        // Finished before the instance can go to another call.
        let printed = instance.log().finish();
        let kept = match key {
            Some(key) if answer.is_ok() && self.may_serve_again(&instance) => {
                instance.set_running(false);
                self.pool.warm.put(&self.owner, key, instance);
                true
            }
            // Returns the instance's memories and tables to the pool,
            // reset, and then its slots.
            _ => {
                drop(instance);
                false
            }
        };
        tracing::debug!(
            connector = %self.label,
            function,
            reused,
            kept,
            instantiate_us = instantiated.as_micros() as u64,
            call_us = (called - instantiated).as_micros() as u64,
            release_us = (started.elapsed() - called).as_micros() as u64,
            memory_kib = memory >> 10,
            "guest call"
        );
        (answer, printed)
    }

    /// Whether a finished call's instance may serve another: it has served
    /// fewer calls than the limit, and no call waits for slots (idle
    /// instances would keep them from it).
    fn may_serve_again(&self, instance: &Instance) -> bool {
        instance.calls() < self.pool.warm.limits().max_calls_per_instance
            && self.pool.admission.queued() == 0
    }

    /// Slots for a fresh instance: free ones, else those of idle instances
    /// (oldest first; none of them this call's tenant, or it would have
    /// taken it), else a place in the queue.
    async fn admit(&self, deadline: Deadline) -> Result<Slots, ConnectorError> {
        loop {
            if let Some(slots) = self.pool.admission.try_take(self.slots) {
                return Ok(slots);
            }
            if !self.pool.warm.evict_oldest() {
                break;
            }
        }
        self.pool.admission.admit(self.slots, deadline).await
    }

    fn recipe(&self) -> InstanceRecipe<'_> {
        InstanceRecipe {
            engine: self.pool.engines.of(self.is_concurrent()),
            grants: &self.grants,
            connector: &self.label,
            env: &self.limits.env,
            memory_bytes: self.limits.memory_bytes,
        }
    }

    /// Instantiates the component. Slot weights keep the pool's memories and
    /// tables from running out; should another pool resource (core
    /// instances) run out all the same, an idle instance is evicted, or the
    /// call waits for running calls to give theirs back, as it waits for a
    /// busy slot, until its own deadline stops it. Alone in the pool, it
    /// never will fit: that is an error.
    async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
        let mut backoff = Duration::from_millis(1);
        loop {
            match self.pre.instantiate_async(&mut *store).await {
                Err(err) if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() => {
                    if self.pool.warm.evict_oldest() {
                        continue;
                    }
                    if self.pool.admission.running() <= 1 {
                        return Err(err);
                    }
                    tracing::debug!(connector = %self.label, "instance pool exhausted, waiting: {err}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }
}

/// Turns a trap into the error the client sees, with what the guest printed
/// last (a Rust panic prints its message there).
fn classify_trap(trap: &wasmtime::Error, timeout: Duration, printed: &[String]) -> ConnectorError {
    if trap.downcast_ref::<DeadlineHit>().is_some() {
        return ConnectorError::DeadlineExceeded(timeout);
    }
    if let Some(refused) = trap.downcast_ref::<BudgetError>() {
        return ConnectorError::MemoryBudget(refused.to_string());
    }
    if let Some(over) = trap.downcast_ref::<OverCap>() {
        return ConnectorError::Crashed(over.to_string());
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
        ConnectorError::Crashed(bindings::guest_text(format!(
            "{reason}; it printed: {}",
            printed.join("\n")
        )))
    }
}
