//! Calls of the async world (`flyte:connector/async-plugin`, since 1.3.0):
//! several calls of one tenant in one instance at once.
//!
//! An instance serving calls is driven by one task ([`Driver`]) that runs
//! the store's component-model event loop (`run_concurrent`) for as long as
//! calls are in it. A call of a tenant joins a running driver of that
//! tenant with room (fewer calls in it than the plugin's
//! `max_concurrent_calls`), else it takes an idle instance of the tenant
//! (see `warm`) or a fresh one and starts a driver for it. When the last
//! call leaves, the driver stops and the instance goes back to the warm
//! pool as after a call of the sync world, so idle limits, eviction and
//! the memory budget treat both worlds' instances alike. Calls without a
//! tenant (metrics, logs, a plugin without reuse) get a driver of their
//! own that no other call joins.
//!
//! Each call is registered with the guest task serving it
//! (`ConcurrentCalls`), so its imports act for it; it is ended when the
//! guest answers, or given up when its time is up or its client leaves,
//! which ends its waits in the guest at once. Guest code that runs past its
//! call's deadline without waiting is stopped by the epoch deadline, which
//! traps the instance: a trap fails every call then in it, and the
//! instance is dropped.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::Poll,
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use tokio::sync::{mpsc, watch};
use wasmtime::{
    AsContextMut as _, Store, UpdateDeadline,
    component::{Accessor, ComponentNamedList, Lift, Lower, TypedFunc},
};

use super::{CallPool, Instance, Owner, instance::DeadlineHit, warm::TenantKey};
use crate::{
    connector::ConnectorError,
    runtime::{
        bindings::{AsyncPlugin, Exports},
        capabilities::{CallEnd, ConcurrentCall, HostState},
        memory::MemoryEstimate,
    },
};

/// What a call of the async world does in its instance: starts its export
/// as a task of `call` ([`enter`]) and answers.
pub(in crate::runtime) type ConcurrentBody<T> = Box<
    dyn for<'a> FnOnce(
            &'a Accessor<HostState>,
            &'a AsyncPlugin,
            Arc<ConcurrentCall>,
        ) -> Pin<
            Box<dyn Future<Output = wasmtime::Result<Result<T, ConnectorError>>> + Send + 'a>,
        > + Send,
>;

/// A call handed to a driver: runs the body and sends its answer; says
/// whether the call had been given up by then.
type Job = Box<
    dyn for<'a> FnOnce(
            &'a Accessor<HostState>,
            &'a AsyncPlugin,
        ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>
        + Send,
>;

/// Starts `func` with `params` as a guest task serving `call`, registered
/// before the guest runs so that its imports act for `call`, and waits for
/// its answer. The task may run on after answering (a timer it started);
/// its waits then end at once, as the call is no longer registered.
pub(in crate::runtime) async fn enter<P, R>(
    accessor: &Accessor<HostState>,
    func: TypedFunc<P, R>,
    params: P,
    call: Arc<ConcurrentCall>,
) -> wasmtime::Result<R>
where
    P: ComponentNamedList + Lower + Send + Sync + 'static,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    let started = accessor.with(|mut access| -> wasmtime::Result<_> {
        let started = func.start_call_concurrent(access.as_context_mut(), params)?;
        access.data_mut().calls_mut().insert(started.task(), call);
        Ok(started)
    })?;
    let task = started.task();
    let answer = func.finish_call_concurrent(accessor, started).await;
    accessor.with(|mut access| access.data_mut().calls_mut().remove(task));
    answer
}

/// The job that runs `body` for `call` and sends its answer to `reply`.
pub(super) fn job<T: Send + 'static>(
    body: ConcurrentBody<T>,
    call: Arc<ConcurrentCall>,
    reply: tokio::sync::oneshot::Sender<wasmtime::Result<Result<T, ConnectorError>>>,
) -> Job {
    Box::new(move |accessor, plugin| {
        Box::pin(async move {
            let answer = body(accessor, plugin, Arc::clone(&call)).await;
            let given_up = !call.end(CallEnd::Returned);
            // The caller may have given up and gone.
            let _ = reply.send(answer);
            given_up
        })
    })
}

/// One instance being driven (or about to be), as calls find it.
pub(in crate::runtime) struct Driver {
    jobs: mpsc::UnboundedSender<Job>,
    /// Why it stopped, once it has.
    stopped: watch::Sender<Option<Stop>>,
}

/// Why a driver stopped with calls still sent to it.
#[derive(Clone)]
pub(super) enum Stop {
    /// Its instance trapped.
    Trap(Arc<wasmtime::Error>),
    /// Its instance could not be had (no room in the pool, no memory in
    /// the budget by the deadline of the call that asked for it, an
    /// instantiation that failed).
    NotStarted(ConnectorError),
}

impl Driver {
    /// Why it stopped: resolves once it has.
    pub(super) async fn stopped(&self) -> Stop {
        let mut stopped = self.stopped.subscribe();
        let stop = match stopped.wait_for(Option::is_some).await {
            Ok(stop) => stop.clone(),
            Err(_) => None,
        };
        stop.unwrap_or_else(|| {
            Stop::NotStarted(ConnectorError::Crashed("its instance stopped".to_owned()))
        })
    }

    fn stop(&self, why: Stop) {
        self.stopped.send_if_modified(|stopped| {
            if stopped.is_some() {
                return false;
            }
            *stopped = Some(why);
            true
        });
    }
}

/// A driver registered before its instance is had, so that calls of its
/// tenant arriving meanwhile queue for it rather than each starting an
/// instance. Dropped without being run, it fails the calls queued to it.
pub(super) struct Opening {
    driver: Arc<Driver>,
    jobs: Option<mpsc::UnboundedReceiver<Job>>,
    key: Option<TenantKey>,
    instances: Arc<ConcurrentInstances>,
}

impl Opening {
    /// Starts driving `instance`.
    pub(super) fn run(mut self, instance: Instance, context: DriverContext) {
        let Some(jobs) = self.jobs.take() else {
            return;
        };
        self.instances.served_before(&self.driver, instance.calls());
        tokio::spawn(drive(
            instance,
            Arc::clone(&self.driver),
            jobs,
            self.key,
            context,
        ));
    }

    /// Fails the calls queued to it with `error`.
    pub(super) fn refuse(mut self, error: ConnectorError) {
        self.close(Stop::NotStarted(error));
    }

    fn close(&mut self, why: Stop) {
        if let Some(jobs) = self.jobs.take() {
            self.instances.forget(&self.driver);
            self.driver.stop(why);
            drop(jobs);
        }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        // The call starting the instance left before it was had.
        self.close(Stop::NotStarted(ConnectorError::Retryable(
            "the instance this call waited for was not started; try again".to_owned(),
        )));
    }
}

/// A running driver, with the calls sent to it and not yet answered.
struct Running {
    driver: Arc<Driver>,
    /// The tenant whose calls may join it; `None` for a call of its own.
    key: Option<TenantKey>,
    in_flight: usize,
    /// Calls its instance has begun, over its life; none join past the
    /// most an instance serves (`--max-instance-reuse-count`).
    begun: u32,
    max_calls: u32,
    /// Calls in it that were given up and have not unwound yet: while
    /// there are any, none join (its guest code may never wait again, and
    /// its instance be stopped; see `arm_call_deadlines`).
    given_up: usize,
    /// Since when some call in it has been given up and not unwound.
    given_up_since: Option<Instant>,
}

impl Running {
    fn unwound(&mut self) {
        self.given_up = self.given_up.saturating_sub(1);
        if self.given_up == 0 {
            self.given_up_since = None;
        }
    }

    fn may_join(&self, key: TenantKey, max_concurrent: usize) -> bool {
        self.key == Some(key)
            && self.in_flight < max_concurrent
            && self.begun < self.max_calls
            && self.given_up == 0
    }
}

/// The running drivers of one component version.
pub(in crate::runtime) struct ConcurrentInstances {
    /// The most calls in one instance at once (`max_concurrent_calls`).
    max_concurrent: usize,
    running: Mutex<Vec<Running>>,
}

/// What a driver needs of its component once started.
pub(super) struct DriverContext {
    pub(super) pool: Arc<CallPool>,
    pub(super) owner: Arc<Owner<Instance>>,
    pub(super) instances: Arc<ConcurrentInstances>,
    pub(super) memory: Arc<MemoryEstimate>,
    pub(super) label: Arc<str>,
}

impl ConcurrentInstances {
    /// No drivers yet; up to `max_concurrent` calls in one instance.
    pub(in crate::runtime) fn new(max_concurrent: usize) -> Self {
        Self {
            max_concurrent: max_concurrent.max(1),
            running: Mutex::default(),
        }
    }

    /// The most calls one instance begins over its life, of
    /// `max_calls_per_instance` (`--max-instance-reuse-count`): that many
    /// for each call it may serve at once, as that many instances of the
    /// sync world would.
    pub(super) fn max_calls(&self, max_calls_per_instance: u32) -> u32 {
        let at_once = u32::try_from(self.max_concurrent).unwrap_or(u32::MAX);
        max_calls_per_instance.saturating_mul(at_once)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Running>> {
        // Counts only: a panic elsewhere leaves them usable.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `job` to a running driver of `key` with room, if there is
    /// one; else gives it back.
    pub(super) fn join(&self, key: Option<TenantKey>, mut job: Job) -> Result<Arc<Driver>, Job> {
        let Some(key) = key else {
            return Err(job);
        };
        let mut running = self.lock();
        for entry in running.iter_mut() {
            if !entry.may_join(key, self.max_concurrent) {
                continue;
            }
            match entry.driver.jobs.send(job) {
                Ok(()) => {
                    entry.in_flight += 1;
                    entry.begun += 1;
                    return Ok(Arc::clone(&entry.driver));
                }
                // Its driver has stopped: not to be joined again.
                Err(mpsc::error::SendError(returned)) => {
                    entry.key = None;
                    job = returned;
                }
            }
        }
        Err(job)
    }

    /// Registers a driver for `key` with `job` as its first call, to run
    /// once its instance is had ([`Opening::run`]).
    pub(super) fn open(
        self: &Arc<Self>,
        key: Option<TenantKey>,
        max_calls: u32,
        job: Job,
    ) -> (Arc<Driver>, Opening) {
        let max_calls = self.max_calls(max_calls);
        let (jobs, receiver) = mpsc::unbounded_channel();
        let driver = Arc::new(Driver {
            jobs,
            stopped: watch::Sender::new(None),
        });
        // The receiver is alive: the first job cannot fail to send.
        let _ = driver.jobs.send(job);
        self.lock().push(Running {
            driver: Arc::clone(&driver),
            key,
            in_flight: 1,
            begun: 1,
            max_calls,
            given_up: 0,
            given_up_since: None,
        });
        let opening = Opening {
            driver: Arc::clone(&driver),
            jobs: Some(receiver),
            key,
            instances: Arc::clone(self),
        };
        (driver, opening)
    }

    /// Runs `change` on the entry of `driver`, if it is running.
    fn with_entry(&self, driver: &Arc<Driver>, change: impl FnOnce(&mut Running)) {
        if let Some(entry) = self
            .lock()
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.driver, driver))
        {
            change(entry);
        }
    }

    /// Counts the calls the instance of `driver` served before it.
    fn served_before(&self, driver: &Arc<Driver>, calls: u32) {
        self.with_entry(driver, |entry| {
            entry.begun = entry.begun.saturating_add(calls)
        });
    }

    /// Counts a call of `driver` given up: none join it until the call
    /// has unwound.
    pub(super) fn given_up(&self, driver: &Arc<Driver>) {
        self.with_entry(driver, |entry| {
            entry.given_up += 1;
            entry.given_up_since.get_or_insert_with(Instant::now);
        });
    }

    /// Whether a call of `driver` given up has not unwound for longer
    /// than [`UNWIND_LIMIT`].
    fn stuck(&self, driver: &Arc<Driver>) -> bool {
        self.lock()
            .iter()
            .find(|e| Arc::ptr_eq(&e.driver, driver))
            .and_then(|e| e.given_up_since)
            .is_some_and(|since| since.elapsed() > UNWIND_LIMIT)
    }

    /// Counts a call of `driver` answered (or unwound, if it was given up).
    fn answered(&self, driver: &Arc<Driver>, given_up: bool) {
        self.with_entry(driver, |entry| {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if given_up {
                entry.unwound();
            }
        });
    }

    /// Counts a call of `driver` given up as unwound.
    pub(super) fn unwound(&self, driver: &Arc<Driver>) {
        self.with_entry(driver, Running::unwound);
    }

    /// Forgets `driver` if no call is in it or on its way to it: whether
    /// it may stop.
    fn close_if_idle(&self, driver: &Arc<Driver>) -> bool {
        let mut running = self.lock();
        match running.iter().position(|e| Arc::ptr_eq(&e.driver, driver)) {
            Some(at) if running[at].in_flight == 0 => {
                running.swap_remove(at);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Forgets `driver`, which has stopped.
    fn forget(&self, driver: &Arc<Driver>) {
        self.lock().retain(|e| !Arc::ptr_eq(&e.driver, driver));
    }
}

/// Drives `instance` until no call is in it, then gives it back to the
/// warm pool for `key` (or drops it); a trap stops it at once.
async fn drive(
    mut instance: Instance,
    driver: Arc<Driver>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    key: Option<TenantKey>,
    context: DriverContext,
) {
    let max_calls = context
        .instances
        .max_calls(context.pool.warm.limits().max_calls_per_instance);
    instance.set_running(true);
    arm_call_deadlines(instance.store_mut());
    let instances = &context.instances;
    let (store, exports, calls_served) = instance.parts_for_driver();
    let outcome = match exports {
        Exports::Async(plugin) => {
            let calls = store.run_concurrent(async |accessor| {
                let mut answering = FuturesUnordered::new();
                std::future::poll_fn(|cx| {
                    loop {
                        while let Poll::Ready(Some(given_up)) = answering.poll_next_unpin(cx) {
                            instances.answered(&driver, given_up);
                        }
                        match jobs.poll_recv(cx) {
                            Poll::Ready(Some(job)) => {
                                *calls_served = calls_served.saturating_add(1);
                                answering.push(job(accessor, plugin));
                                continue;
                            }
                            Poll::Ready(None) => return Poll::Ready(()),
                            Poll::Pending => {}
                        }
                        if answering.is_empty() && instances.close_if_idle(&driver) {
                            return Poll::Ready(());
                        }
                        return Poll::Pending;
                    }
                })
                .await
            });
            // Outside the event loop, which guest code that never waits
            // holds (as the epoch deadline's traps are).
            let watchdog = async {
                loop {
                    tokio::time::sleep(UNWIND_GRACE).await;
                    if instances.stuck(&driver) {
                        break;
                    }
                }
            };
            tokio::select! {
                outcome = calls => outcome,
                () = watchdog => Err(wasmtime::format_err!(
                    "a call given up did not unwind within {UNWIND_LIMIT:?}, and its instance \
                     was stopped"
                )),
            }
        }
        Exports::Sync(_) => Err(wasmtime::format_err!(
            "a component of the sync world driven as one of the async world"
        )),
    };
    match outcome {
        Ok(()) => {
            driver.stop(Stop::NotStarted(ConnectorError::Crashed(
                "its instance stopped".to_owned(),
            )));
            let memory = instance.memory_in_use();
            context.memory.observe(memory);
            tracing::debug!(
                connector = %context.label,
                calls = instance.calls(),
                memory_kib = memory >> 10,
                "concurrent instance idle"
            );
            let pool = &context.pool;
            match key {
                Some(key) if instance.calls() < max_calls && pool.admission.queued() == 0 => {
                    instance.set_running(false);
                    pool.warm.put(&context.owner, key, instance);
                }
                _ => drop(instance),
            }
        }
        Err(trap) => {
            instances.forget(&driver);
            // Calls still queued to it see the trap too.
            drop(jobs);
            drop(instance);
            tracing::debug!(connector = %context.label, "concurrent instance trapped: {trap:#}");
            driver.stop(Stop::Trap(Arc::new(trap)));
        }
    }
}

/// How long past its deadline a call's guest code may run before its
/// instance is stopped: a call given up at its deadline is resumed to
/// unwind (its waits end, its `finally` blocks run), which takes moments.
const UNWIND_GRACE: Duration = Duration::from_secs(1);

/// How long a call given up may take to unwind (its guest task to end)
/// before its instance is stopped: one that never does (it waits on
/// something of its own that never comes) would keep other calls from
/// joining, and the instance from going idle, for good.
const UNWIND_LIMIT: Duration = Duration::from_secs(5);

/// Gives the guest code of the calls in `store` their own deadlines: each
/// epoch tick yields to the executor, and traps once the call whose task
/// is running is past its deadline by more than [`UNWIND_GRACE`] (guest
/// code that never waits).
fn arm_call_deadlines(store: &mut Store<HostState>) {
    store.epoch_deadline_callback(|mut store| {
        let root = store.async_call_stack().ok().and_then(|stack| stack.last());
        let overdue = root.and_then(|task| {
            let grace_ended = Instant::now().checked_sub(UNWIND_GRACE)?;
            Some(store.data().calls().get(task)?.overdue(grace_ended))
        });
        if overdue == Some(true) {
            Err(DeadlineHit.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that is never run: the bookkeeping is what is tested.
    fn job() -> Job {
        Box::new(|_, _| Box::pin(async { false }))
    }

    fn key(byte: u8) -> Option<TenantKey> {
        Some(TenantKey::for_tests(byte))
    }

    #[test]
    fn calls_join_a_driver_of_their_tenant_up_to_the_limit() {
        let instances = Arc::new(ConcurrentInstances::new(2));
        let (driver, _opening) = instances.open(key(1), 100, job());
        let joined = instances
            .join(key(1), job())
            .ok()
            .expect("room for one more");
        assert!(Arc::ptr_eq(&joined, &driver));
        assert!(
            instances.join(key(1), job()).is_err(),
            "two at once at most"
        );
        assert!(
            instances.join(key(2), job()).is_err(),
            "never another tenant"
        );
        assert!(
            instances.join(None, job()).is_err(),
            "never a call without one"
        );
        instances.answered(&driver, false);
        assert!(instances.join(key(1), job()).is_ok(), "room again");
    }

    #[test]
    fn a_driver_without_calls_may_stop_and_is_then_forgotten() {
        let instances = Arc::new(ConcurrentInstances::new(4));
        let (driver, _opening) = instances.open(key(1), 100, job());
        assert!(!instances.close_if_idle(&driver), "a call is in it");
        instances.answered(&driver, false);
        assert!(instances.close_if_idle(&driver));
        assert!(instances.join(key(1), job()).is_err(), "it stopped");
    }

    #[test]
    fn none_join_while_a_given_up_call_has_not_unwound() {
        let instances = Arc::new(ConcurrentInstances::new(4));
        let (driver, _opening) = instances.open(key(1), 100, job());
        instances.given_up(&driver);
        assert!(instances.join(key(1), job()).is_err());
        assert!(!instances.stuck(&driver), "not for long yet");
        instances.answered(&driver, true);
        assert!(instances.join(key(1), job()).is_ok());
    }

    #[test]
    fn the_reuse_count_holds_per_call_at_once() {
        let instances = Arc::new(ConcurrentInstances::new(4));
        assert_eq!(instances.max_calls(1000), 4000);
        let (driver, _opening) = instances.open(key(1), 3, job());
        instances.served_before(&driver, 11);
        assert!(
            instances.join(key(1), job()).is_err(),
            "12 of 12 begun: the instance is done"
        );
    }

    #[test]
    fn an_opening_dropped_fails_the_calls_queued_to_it() {
        let instances = Arc::new(ConcurrentInstances::new(4));
        let (driver, opening) = instances.open(key(1), 100, job());
        drop(opening);
        let stop = futures_util::FutureExt::now_or_never(driver.stopped());
        assert!(
            matches!(stop, Some(Stop::NotStarted(ConnectorError::Retryable(_)))),
            "queued calls learn why"
        );
        assert!(instances.join(key(1), job()).is_err());
    }
}
