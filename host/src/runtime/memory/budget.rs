//! The memory budget: how much memory the calls in flight may hold at once,
//! so that a burst of memory-hungry calls makes calls wait (or fail one by
//! one) instead of getting the whole pod OOM-killed with every tenant's
//! calls in it.
//!
//! What is charged:
//!
//! - each instance's linear memory, as it is created and as it grows, until
//!   the instance is dropped (an idle warm instance keeps its charge, and is
//!   evicted first when a call needs room);
//! - the bytes of each call's request (its inputs, template, connection),
//!   from its arrival, while it waits in the queue and while it runs. They
//!   may take at most [`REQUEST_SHARE`] of the budget: a request that does
//!   not fit is refused at once, as a full queue refuses it, since its bytes
//!   are already in memory and waiting would not free them.
//!
//! A fresh instance is admitted with a reservation ([`MemoryBudget::reserve`]):
//! what its component's recent calls needed at most, at least its initial
//! memory. A call waits in line (first come, first served) until its
//! reservation fits. An instance growing past what it holds takes more
//! ([`Charge::grow`]); if the budget is full it waits for other calls to
//! give memory back, ahead of the calls waiting to start, unless every
//! other call holding memory is itself waiting to grow: then waiting could
//! only deadlock, and its growth fails, failing that call alone. So does a
//! call that could never fit, needing more than the whole budget.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use prometheus::IntGauge;
use tokio::sync::Notify;

use crate::connector::{ConnectorError, Deadline};

/// The bytes of requests (queued or running) may take at most one
/// `REQUEST_SHARE`-th of the budget.
pub const REQUEST_SHARE: u64 = 8;

/// The default budget: this percentage of the memory the process may use
/// (its cgroup's limit, else the machine's; see `pod_limit`). The rest is
/// the server's own: its code, the compiled components, the instance pool's
/// bookkeeping, buffers of gRPC and outbound HTTP.
pub const DEFAULT_BUDGET_PERCENT: u32 = 60;

/// How large the memory budget is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSize {
    /// This many bytes.
    Bytes(u64),
    /// This percentage of the memory the process may use.
    Percent(u32),
}

impl Default for BudgetSize {
    fn default() -> Self {
        Self::Percent(DEFAULT_BUDGET_PERCENT)
    }
}

impl std::fmt::Display for BudgetSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Percent(percent) => write!(f, "{percent}%"),
            Self::Bytes(bytes) if bytes % (1 << 20) == 0 => write!(f, "{}MiB", bytes >> 20),
            Self::Bytes(bytes) => write!(f, "{bytes}B"),
        }
    }
}

impl BudgetSize {
    /// `60%` (of the memory the process may use), or a size (`512MiB`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().strip_suffix('%') {
            Some(percent) => match percent.trim().parse::<u32>() {
                Ok(percent @ 1..=100) => Ok(Self::Percent(percent)),
                _ => Err(format!("{text:?} is not a percentage from 1% to 100%")),
            },
            None => crate::size::Size::parse(text).map(|size| Self::Bytes(size.0 as u64)),
        }
    }

    /// The budget in bytes, and how it was found, for the start-up log.
    pub fn resolve(self, limit: impl FnOnce() -> super::pod_limit::MemoryLimit) -> (u64, String) {
        match self {
            Self::Bytes(bytes) => (bytes, "--memory-budget".to_owned()),
            Self::Percent(percent) => {
                let limit = limit();
                let bytes = limit.bytes / 100 * u64::from(percent);
                (bytes, format!("{percent}% of {limit}"))
            }
        }
    }
}

/// Drops one idle instance holding memory; false when there is none.
pub(in crate::runtime) type Evict = Box<dyn Fn() -> bool + Send + Sync>;

/// Gauges of the budget and its use.
#[derive(Clone)]
pub(in crate::runtime) struct BudgetGauges {
    pub(in crate::runtime) used: IntGauge,
    pub(in crate::runtime) waiting: IntGauge,
}

/// The budget, shared by every call. Cheap to clone.
#[derive(Clone)]
pub(in crate::runtime) struct MemoryBudget(Arc<Inner>);

struct Inner {
    total: u64,
    state: Mutex<State>,
    /// Wakes the calls waiting to grow when memory is given back.
    released: Notify,
    evict: Mutex<Option<Evict>>,
    gauges: Option<BudgetGauges>,
    next_ticket: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Bytes charged: instances' memory and requests.
    used: u64,
    /// Of which, requests' bytes.
    requests: u64,
    /// Charges of instances running a call (not idle).
    running: usize,
    /// Of which, waiting to grow.
    growing: usize,
    /// Calls waiting for a reservation, first come first, each with what
    /// wakes it: only the first is woken when memory is given back.
    line: VecDeque<(u64, Arc<Notify>)>,
}

/// Why memory could not be charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(in crate::runtime) enum BudgetError {
    /// More than the budget could ever give one call.
    #[error(
        "it needs {needed} MiB of memory, more than the server's memory budget lets one call \
         hold ({budget} MiB; --memory-budget)",
        needed = mib(*needed),
        budget = mib(*budget)
    )]
    NeverFits {
        /// Bytes the call would hold.
        needed: u64,
        /// Bytes a call may hold at most.
        budget: u64,
    },
    /// The budget is held by calls that are all waiting for more.
    #[error(
        "its memory could not grow to {wanted} MiB: the server's memory budget ({budget} MiB; \
         --memory-budget) is held by calls in flight that need more too",
        wanted = mib(*wanted),
        budget = mib(*budget)
    )]
    Exhausted {
        /// Bytes the instance would have held.
        wanted: u64,
        /// The budget.
        budget: u64,
    },
    /// Requests in flight already hold their share of the budget.
    #[error(
        "the requests waiting and running hold {held} MiB, their share of the server's memory \
         budget ({budget} MiB; --memory-budget); try again later",
        held = mib(*held),
        budget = mib(*budget)
    )]
    RequestsFull {
        /// Bytes of requests held.
        held: u64,
        /// The budget.
        budget: u64,
    },
}

impl From<BudgetError> for ConnectorError {
    fn from(error: BudgetError) -> Self {
        ConnectorError::MemoryBudget(error.to_string())
    }
}

fn mib(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1 << 20);
    if mib >= 10.0 {
        format!("{mib:.0}")
    } else {
        format!("{mib:.1}")
    }
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("total", &self.0.total)
            .finish_non_exhaustive()
    }
}

impl MemoryBudget {
    /// A budget of `total` bytes, its use recorded in `gauges`.
    pub(in crate::runtime) fn new(total: u64, gauges: Option<BudgetGauges>) -> Self {
        Self(Arc::new(Inner {
            total,
            state: Mutex::default(),
            released: Notify::new(),
            evict: Mutex::new(None),
            gauges,
            next_ticket: AtomicU64::new(0),
        }))
    }

    /// Bytes charged now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.0.lock().used
    }

    /// Sets how an idle instance is dropped to make room.
    pub(in crate::runtime) fn set_evict(&self, evict: Evict) {
        *self.0.evict.lock().unwrap_or_else(PoisonError::into_inner) = Some(evict);
    }

    /// Charges a request's `bytes` at once, or refuses it.
    pub(in crate::runtime) fn charge_request(
        &self,
        bytes: u64,
    ) -> Result<RequestCharge, BudgetError> {
        let share = self.0.total / REQUEST_SHARE;
        let mut state = self.0.lock();
        if state.requests + bytes > share {
            return Err(BudgetError::RequestsFull {
                held: state.requests,
                budget: self.0.total,
            });
        }
        state.requests += bytes;
        state.used += bytes;
        self.0.publish(&state);
        Ok(RequestCharge {
            budget: Arc::clone(&self.0),
            bytes,
        })
    }

    /// Reserves `bytes` for a fresh instance, waiting in line until they
    /// fit (or `deadline` passes). Idle instances are evicted to make room
    /// before waiting.
    pub(in crate::runtime) async fn reserve(
        &self,
        bytes: u64,
        deadline: Deadline,
    ) -> Result<Charge, ConnectorError> {
        let capacity = self.0.for_instances();
        if bytes > capacity {
            return Err(BudgetError::NeverFits {
                needed: bytes,
                budget: capacity,
            }
            .into());
        }
        // Nobody waiting and room enough: no line to join.
        if let Some(charge) = self.0.take_if_first(None, bytes) {
            return Ok(charge);
        }
        let ticket = self.0.next_ticket.fetch_add(1, Ordering::Relaxed);
        let woken = Arc::new(Notify::new());
        let place = InLine::join(&self.0, ticket, Arc::clone(&woken));
        let waiting_since = Instant::now();
        loop {
            if let Some(charge) = self.0.take_if_first(Some(ticket), bytes) {
                drop(place);
                return Ok(charge);
            }
            // The first in line makes room by evicting idle instances.
            if self.0.is_first(ticket) && self.0.evict_one() {
                continue;
            }
            // A wake-up between the check and here is kept (`notify_one`).
            let woken = woken.notified();
            match deadline.instant() {
                Some(at) => tokio::time::timeout_at(at.into(), woken)
                    .await
                    .map_err(|_| ConnectorError::QueueTimeout {
                        waited: waiting_since.elapsed(),
                    })?,
                None => woken.await,
            }
        }
    }
}

impl State {
    /// Bytes instances hold.
    fn instances(&self) -> u64 {
        self.used - self.requests
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What instances may hold: the budget less the requests' share.
    fn for_instances(&self) -> u64 {
        self.total - self.total / REQUEST_SHARE
    }

    /// Charges `bytes` for a fresh instance if they fit, no call waits to
    /// grow, and this call is first in line (`ticket`), or the line is empty
    /// (no ticket).
    fn take_if_first(self: &Arc<Self>, ticket: Option<u64>, bytes: u64) -> Option<Charge> {
        let mut state = self.lock();
        let first = state.line.front().map(|(t, _)| *t) == ticket;
        if !first || state.growing > 0 || state.instances() + bytes > self.for_instances() {
            return None;
        }
        state.used += bytes;
        state.running += 1;
        self.publish(&state);
        Some(Charge {
            budget: Arc::clone(self),
            bytes,
            running: true,
        })
    }

    fn is_first(&self, ticket: u64) -> bool {
        self.lock().line.front().is_some_and(|(t, _)| *t == ticket)
    }

    /// Wakes who may now fit: the calls waiting to grow, else the first
    /// call waiting to start.
    fn wake(&self, state: &State) {
        if state.growing > 0 {
            self.released.notify_waiters();
        } else if let Some((_, first)) = state.line.front() {
            first.notify_one();
        }
    }

    fn evict_one(&self) -> bool {
        let evict = self.evict.lock().unwrap_or_else(PoisonError::into_inner);
        evict.as_ref().is_some_and(|evict| evict())
    }

    fn publish(&self, state: &State) {
        if let Some(gauges) = &self.gauges {
            gauges
                .used
                .set(i64::try_from(state.used).unwrap_or(i64::MAX));
            gauges
                .waiting
                .set(i64::try_from(state.line.len() + state.growing).unwrap_or(i64::MAX));
        }
    }

    /// Gives back `bytes` (and a running charge's place, if `running`).
    fn release(&self, bytes: u64, running: bool) {
        let mut state = self.lock();
        state.used -= bytes;
        if running {
            state.running -= 1;
        }
        self.publish(&state);
        self.wake(&state);
    }
}

/// A place in the line of calls waiting for a reservation, left when dropped.
struct InLine<'a> {
    budget: &'a Inner,
    ticket: u64,
}

impl<'a> InLine<'a> {
    fn join(budget: &'a Inner, ticket: u64, woken: Arc<Notify>) -> Self {
        let mut state = budget.lock();
        state.line.push_back((ticket, woken));
        budget.publish(&state);
        Self { budget, ticket }
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        let was_first = state.line.front().is_some_and(|(t, _)| *t == self.ticket);
        state.line.retain(|(t, _)| *t != self.ticket);
        self.budget.publish(&state);
        if was_first {
            // The next in line may fit where this one did not.
            self.budget.wake(&state);
        }
    }
}

/// A request's bytes, charged until dropped.
pub(in crate::runtime) struct RequestCharge {
    budget: Arc<Inner>,
    bytes: u64,
}

impl Drop for RequestCharge {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        state.requests -= self.bytes;
        drop(state);
        self.budget.release(self.bytes, false);
    }
}

/// The memory one instance holds, charged until dropped.
pub(in crate::runtime) struct Charge {
    budget: Arc<Inner>,
    bytes: u64,
    /// Whether its instance is running a call (else idle).
    running: bool,
}

impl Charge {
    /// Bytes held.
    pub(in crate::runtime) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Marks its instance idle (kept warm between calls) or running again;
    /// only running instances' charges are counted as able to give memory
    /// back by finishing.
    pub(in crate::runtime) fn set_running(&mut self, running: bool) {
        if self.running == running {
            return;
        }
        self.running = running;
        let mut state = self.budget.lock();
        if running {
            state.running += 1;
        } else {
            state.running -= 1;
            // An idle instance can be evicted: a waiting call may now make
            // room.
            self.budget.wake(&state);
        }
    }

    /// Holds `extra` bytes more, waiting for room while other calls may
    /// give some back; fails when it could never fit, or when every other
    /// call holding memory is waiting too.
    pub(in crate::runtime) async fn grow(&mut self, extra: u64) -> Result<(), BudgetError> {
        let wanted = self.bytes + extra;
        let capacity = self.budget.for_instances();
        if wanted > capacity {
            return Err(BudgetError::NeverFits {
                needed: wanted,
                budget: capacity,
            });
        }
        let mut waiting = false;
        let outcome = loop {
            let released = self.budget.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let others_running = {
                let mut state = self.budget.lock();
                if state.instances() + extra <= capacity {
                    state.used += extra;
                    self.bytes = wanted;
                    None
                } else {
                    // Another running call may finish or give back; an idle
                    // one may be evicted. If every other running call waits
                    // to grow too, none of them ever will.
                    Some(
                        state
                            .running
                            .saturating_sub(state.growing + usize::from(!waiting)),
                    )
                }
            };
            let Some(others_running) = others_running else {
                break Ok(());
            };
            if self.budget.evict_one() {
                continue;
            }
            if others_running == 0 {
                break Err(BudgetError::Exhausted {
                    wanted,
                    budget: self.budget.total,
                });
            }
            if !waiting {
                waiting = true;
                let mut state = self.budget.lock();
                state.growing += 1;
                self.budget.publish(&state);
            }
            released.await;
        };
        let mut state = self.budget.lock();
        if waiting {
            state.growing -= 1;
            // Calls waiting to start were held back while this one waited.
            self.budget.wake(&state);
        }
        self.budget.publish(&state);
        outcome
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes, self.running);
    }
}

/// What a fresh instance of one component reserves: what its calls were
/// seen to need lately, at least its initial memory. A peak is taken at
/// once; a lower one lowers the estimate by an eighth per call, so one
/// outlier does not hold the component's calls back for long.
#[derive(Debug)]
pub(in crate::runtime) struct MemoryEstimate {
    initial: u64,
    recent: AtomicU64,
}

impl MemoryEstimate {
    /// An estimate starting at `initial` bytes.
    pub(in crate::runtime) fn new(initial: u64) -> Self {
        Self {
            initial,
            recent: AtomicU64::new(initial),
        }
    }

    /// Bytes to reserve for a fresh instance.
    pub(in crate::runtime) fn reservation(&self) -> u64 {
        self.recent.load(Ordering::Relaxed).max(self.initial)
    }

    /// Takes in the memory a call's instance ended with.
    pub(in crate::runtime) fn observe(&self, peak: u64) {
        let _ = self
            .recent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |recent| {
                Some(peak.max(recent - recent / 8))
            });
    }
}

/// What one instance's store enforces as its memories are created and
/// grow: the instance's cap (each linear memory at most `cap` bytes), and
/// its charge against the budget, taken from its reservation first.
pub(in crate::runtime) struct InstanceMemory {
    cap: usize,
    charge: Charge,
    /// Bytes of linear memory the instance has (all its memories).
    in_use: u64,
    /// The growth last allowed, given back if it fails after all.
    last_growth: u64,
}

/// A memory growth past the instance's cap.
#[derive(Debug, thiserror::Error)]
#[error(
    "its memory would grow to {desired} MiB, past its cap of {cap} MiB (memory_mb in its \
     manifest, else --memory-limit-mb)",
    desired = mib(*desired as u64),
    cap = mib(*cap as u64)
)]
pub(in crate::runtime) struct OverCap {
    desired: usize,
    cap: usize,
}

impl InstanceMemory {
    /// The memory of an instance capped at `cap` bytes per memory, holding
    /// `charge` (its reservation, or what a warm instance already holds).
    pub(in crate::runtime) fn new(cap: usize, charge: Charge) -> Self {
        Self {
            cap,
            charge,
            in_use: 0,
            last_growth: 0,
        }
    }

    /// The charge, to mark the instance running or idle.
    pub(in crate::runtime) fn charge_mut(&mut self) -> &mut Charge {
        &mut self.charge
    }

    /// Bytes of linear memory the instance has.
    pub(in crate::runtime) fn in_use(&self) -> u64 {
        self.in_use
    }
}

#[async_trait::async_trait]
impl wasmtime::ResourceLimiterAsync for InstanceMemory {
    async fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap || maximum.is_some_and(|max| desired > max) {
            return Err(OverCap {
                desired,
                cap: self.cap,
            }
            .into());
        }
        let growth = desired.saturating_sub(current) as u64;
        let in_use = self.in_use + growth;
        if in_use > self.charge.bytes() {
            self.charge.grow(in_use - self.charge.bytes()).await?;
        }
        self.in_use = in_use;
        self.last_growth = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.in_use -= self.last_growth;
        self.last_growth = 0;
        // A failure to grow traps, as a refused growth does: guests treat
        // running out of memory as fatal anyway, and a trap names why.
        Err(error.context("the instance's memory could not grow"))
    }

    async fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[tokio::test]
    async fn a_reservation_waits_until_memory_is_given_back() {
        let budget = MemoryBudget::new(80 * MIB, None);
        let first = budget
            .reserve(60 * MIB, Deadline::NONE)
            .await
            .expect("fits");
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(60 * MIB, Deadline::NONE).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(first);
        assert!(waiting.await.expect("join"));
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn what_never_fits_fails_at_once_and_a_deadline_ends_the_wait() {
        let budget = MemoryBudget::new(80 * MIB, None);
        let err = budget
            .reserve(79 * MIB, Deadline::NONE)
            .await
            .err()
            .expect("more than instances may hold");
        assert!(err.to_string().contains("--memory-budget"), "{err}");
        let _held = budget
            .reserve(60 * MIB, Deadline::NONE)
            .await
            .expect("fits");
        let timed_out = budget
            .reserve(30 * MIB, Deadline::after(Duration::from_millis(50)))
            .await;
        assert!(matches!(
            timed_out,
            Err(ConnectorError::QueueTimeout { .. })
        ));
        assert_eq!(budget.used(), 60 * MIB);
    }

    #[tokio::test]
    async fn a_growth_waits_for_a_running_call_and_fails_when_all_wait() {
        // 70 MiB for instances, 10 for requests.
        let budget = MemoryBudget::new(80 * MIB, None);
        let mut a = budget.reserve(30 * MIB, Deadline::NONE).await.expect("a");
        let mut b = budget.reserve(30 * MIB, Deadline::NONE).await.expect("b");
        // b runs on: a waits for it.
        let grown = tokio::spawn(async move {
            let outcome = a.grow(20 * MIB).await;
            (outcome, a)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!grown.is_finished());
        // Now b wants more too: with a waiting, waiting would never end.
        let err = b.grow(20 * MIB).await.expect_err("deadlock");
        assert!(matches!(err, BudgetError::Exhausted { .. }), "{err}");
        assert!(err.to_string().contains("--memory-budget"), "{err}");
        // b's call fails and its instance is dropped: a gets the room.
        drop(b);
        let (outcome, a) = grown.await.expect("join");
        assert_eq!(outcome, Ok(()));
        assert_eq!(a.bytes(), 50 * MIB);
        let mut a = a;
        let err = a
            .grow(30 * MIB)
            .await
            .expect_err("more than instances may hold");
        assert!(matches!(err, BudgetError::NeverFits { .. }), "{err}");
        assert_eq!(budget.used(), 50 * MIB);
    }

    #[tokio::test]
    async fn idle_instances_are_evicted_to_make_room() {
        let budget = MemoryBudget::new(80 * MIB, None);
        let mut idle = budget
            .reserve(60 * MIB, Deadline::NONE)
            .await
            .expect("idle");
        idle.set_running(false);
        let kept = Arc::new(Mutex::new(Some(idle)));
        let evicted = Arc::clone(&kept);
        budget.set_evict(Box::new(move || {
            evicted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .is_some()
        }));
        let fresh = budget
            .reserve(60 * MIB, Deadline::after(Duration::from_secs(5)))
            .await
            .expect("room made");
        assert_eq!(budget.used(), 60 * MIB);
        drop(fresh);
    }

    #[test]
    fn the_estimate_rises_to_a_peak_at_once_and_falls_slowly() {
        let estimate = MemoryEstimate::new(MIB);
        estimate.observe(64 * MIB);
        assert_eq!(estimate.reservation(), 64 * MIB);
        estimate.observe(MIB);
        assert_eq!(estimate.reservation(), 56 * MIB);
        for _ in 0..100 {
            estimate.observe(0);
        }
        assert_eq!(estimate.reservation(), MIB);
    }

    #[test]
    fn the_size_is_a_share_of_the_limit_or_a_number_of_bytes() {
        assert_eq!(BudgetSize::parse("60%"), Ok(BudgetSize::Percent(60)));
        assert_eq!(
            BudgetSize::parse("512MiB"),
            Ok(BudgetSize::Bytes(512 * MIB))
        );
        for bad in ["0%", "101%", "x%", "0", "lots"] {
            assert!(BudgetSize::parse(bad).is_err(), "{bad}");
        }
        let limit = || super::super::pod_limit::MemoryLimit {
            bytes: 300 * MIB,
            source: super::super::pod_limit::LimitSource::Physical,
        };
        let (bytes, shown) = BudgetSize::Percent(60).resolve(limit);
        assert_eq!(bytes, 180 * MIB);
        assert!(shown.starts_with("60% of 300 MiB"), "{shown}");
    }

    #[test]
    fn requests_take_at_most_their_share() {
        let budget = MemoryBudget::new(80 * MIB, None);
        let held = budget.charge_request(10 * MIB).expect("an eighth");
        let err = budget.charge_request(1).err().expect("past the share");
        assert!(err.to_string().contains("try again later"), "{err}");
        drop(held);
        assert_eq!(budget.used(), 0);
    }
}
