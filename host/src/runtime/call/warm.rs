//! Warm instances: a finished call's instance kept for a later call of the
//! same tenant, for plugins whose manifest says `instance_reuse =
//! "connection"`.
//!
//! An idle instance is filed under its owner (one loaded version of one
//! component) and a [`TenantKey`], a keyed hash of the call's merged
//! connection map, so a later call takes it only if it is of the same
//! component version with the very same secrets and configs. The map itself
//! is never kept: the key is an HMAC-SHA256 under a random key drawn when
//! the server starts, so equal keys mean equal maps and a key tells nothing
//! of its map.
//!
//! The idle list is bounded per owner ([`IdleLimit`]): by default by the
//! owner's recent demand, the most calls it had in flight at once within
//! the last one to two idle timeouts, so a connector whose calls wait on
//! the network keeps an instance for each call a steady load has in flight
//! instead of instantiating most of them afresh. An instance idle longer
//! than the idle timeout is dropped by a reaper task. Idle instances hold
//! their call slots, so a call that finds no free slot evicts the oldest
//! idle instance (of whatever owner) rather than wait
//! ([`WarmPool::evict_oldest`]).
//! Whether an instance may be kept at all (it did not trap, it has served
//! fewer calls than the limit) is the caller's decision.
//!
//! The list is one queue, oldest first: taking scans it from the newest
//! end, which is short work at the sizes it is bounded to (no more than
//! the calls that were just in flight).

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ring::{hmac, rand::SystemRandom};

use crate::connector::ConnectionMap;

/// How many idle instances are kept, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseLimits {
    /// Idle instances kept per loaded component; more are dropped, oldest first.
    pub max_idle_per_component: IdleLimit,
    /// An instance idle longer than this is dropped.
    pub idle_timeout: Duration,
    /// Calls one instance serves at most before it is dropped.
    pub max_calls_per_instance: u32,
}

impl Default for ReuseLimits {
    fn default() -> Self {
        Self {
            max_idle_per_component: IdleLimit::for_workers(Self::default_workers()),
            idle_timeout: Duration::from_secs(1),
            max_calls_per_instance: 1000,
        }
    }
}

impl ReuseLimits {
    /// The server's worker threads unless `--worker` says: one per CPU core.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// How many idle instances one loaded component may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleLimit {
    /// As many as the component had calls in flight at once lately (within
    /// the last one to two idle timeouts), and at least `at_least`.
    Demand {
        /// Kept even when fewer calls ran at once.
        at_least: usize,
    },
    /// This many at most, whatever the demand.
    Fixed(usize),
}

impl IdleLimit {
    /// The default for a server of `workers` threads: following demand, at
    /// least twice the workers.
    pub fn for_workers(workers: usize) -> Self {
        Self::Demand {
            at_least: 2 * workers,
        }
    }
}

/// Who a call is for: a keyed hash of its merged connection map.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(in crate::runtime) struct TenantKey([u8; 32]);

#[cfg(test)]
impl TenantKey {
    /// A key of `byte`s, for tests of what keys it.
    pub(in crate::runtime) fn for_tests(byte: u8) -> Self {
        Self([byte; 32])
    }
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Nothing of the map, nor the whole hash, in any output.
        write!(f, "TenantKey({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// The idle instances of every component, of type `T`.
pub(in crate::runtime) struct WarmPool<T> {
    limits: ReuseLimits,
    hmac_key: hmac::Key,
    next_owner: AtomicU64,
    state: Mutex<State<T>>,
}

struct State<T> {
    /// Oldest first.
    idle: VecDeque<Idle<T>>,
    /// Whether a reaper task is running.
    reaping: bool,
}

struct Idle<T> {
    owner: u64,
    key: TenantKey,
    since: Instant,
    instance: T,
}

/// One loaded component version as the pool knows it; dropping it drops
/// its idle instances.
pub(in crate::runtime) struct Owner<T: Send + 'static> {
    id: u64,
    demand: Mutex<Demand>,
    pool: Arc<WarmPool<T>>,
}

/// The calls of one owner in flight, and the most at once in this window
/// of one idle timeout and the one before.
struct Demand {
    in_flight: usize,
    window_start: Instant,
    this_window: usize,
    last_window: usize,
}

impl Demand {
    fn new() -> Self {
        Self {
            in_flight: 0,
            window_start: Instant::now(),
            this_window: 0,
            last_window: 0,
        }
    }

    /// Starts a new window once this one is `window` old.
    fn roll(&mut self, window: Duration) {
        let age = self.window_start.elapsed();
        if age < window {
            return;
        }
        // Two windows on, nothing started in the last one: the calls in
        // flight now were all it had.
        self.last_window = if age < 2 * window {
            self.this_window
        } else {
            self.in_flight
        };
        self.this_window = self.in_flight;
        self.window_start = Instant::now();
    }

    fn peak(&mut self, window: Duration) -> usize {
        self.roll(window);
        self.this_window.max(self.last_window)
    }
}

/// One call of an owner in flight, counted until it is dropped.
pub(in crate::runtime) struct InFlight<'a, T: Send + 'static> {
    owner: &'a Owner<T>,
}

impl<T: Send + 'static> Owner<T> {
    fn demand(&self) -> MutexGuard<'_, Demand> {
        // Counters only: a panic elsewhere leaves them usable.
        self.demand.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call in flight until the guard is dropped; the idle limit
    /// follows the most at once.
    pub(in crate::runtime) fn call_started(&self) -> InFlight<'_, T> {
        let window = self.pool.limits.idle_timeout;
        let mut demand = self.demand();
        demand.roll(window);
        demand.in_flight += 1;
        demand.this_window = demand.this_window.max(demand.in_flight);
        InFlight { owner: self }
    }
}

impl<T: Send + 'static> Drop for InFlight<'_, T> {
    fn drop(&mut self) {
        let mut demand = self.owner.demand();
        demand.in_flight = demand.in_flight.saturating_sub(1);
    }
}

impl<T: Send + 'static> Drop for Owner<T> {
    fn drop(&mut self) {
        let id = self.id;
        let dropped = self.pool.remove_where(|idle| idle.owner == id);
        drop(dropped);
    }
}

impl<T: Send + 'static> WarmPool<T> {
    /// An empty pool with a fresh random hashing key.
    pub(in crate::runtime) fn new(limits: ReuseLimits) -> anyhow::Result<Arc<Self>> {
        let hmac_key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("cannot draw a random key for instance reuse"))?;
        Ok(Arc::new(Self {
            limits,
            hmac_key,
            next_owner: AtomicU64::new(0),
            state: Mutex::new(State {
                idle: VecDeque::new(),
                reaping: false,
            }),
        }))
    }

    /// The limits it keeps to.
    pub(in crate::runtime) fn limits(&self) -> ReuseLimits {
        self.limits
    }

    /// A new owner, for one loaded component version.
    pub(in crate::runtime) fn owner(self: &Arc<Self>) -> Owner<T> {
        Owner {
            id: self.next_owner.fetch_add(1, Ordering::Relaxed),
            demand: Mutex::new(Demand::new()),
            pool: Arc::clone(self),
        }
    }

    /// The tenant key of `map`: each key and value with its length before
    /// it, so no two maps encode alike.
    pub(in crate::runtime) fn key_of(&self, map: &ConnectionMap) -> TenantKey {
        let mut context = hmac::Context::with_key(&self.hmac_key);
        for (name, value) in map {
            for part in [name.as_bytes(), value.as_bytes()] {
                context.update(&(part.len() as u64).to_le_bytes());
                context.update(part);
            }
        }
        let mut key = [0; 32];
        key.copy_from_slice(context.sign().as_ref());
        TenantKey(key)
    }

    /// Idle instances, of every owner.
    pub(in crate::runtime) fn idle_count(&self) -> usize {
        self.lock().idle.len()
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every update leaves the list whole; a panic elsewhere while it
        // was held changes nothing that matters.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently idle instance of `owner` for `key`, unless it has
    /// been idle past the timeout.
    pub(in crate::runtime) fn take(&self, owner: &Owner<T>, key: TenantKey) -> Option<T> {
        let mut state = self.lock();
        let at = state
            .idle
            .iter()
            .rposition(|idle| idle.owner == owner.id && idle.key == key)?;
        let idle = state.idle.remove(at)?;
        drop(state);
        if idle.since.elapsed() < self.limits.idle_timeout {
            Some(idle.instance)
        } else {
            None
        }
    }

    /// How many idle instances `owner` may keep now.
    fn idle_limit(&self, owner: &Owner<T>) -> usize {
        match self.limits.max_idle_per_component {
            IdleLimit::Fixed(limit) => limit,
            IdleLimit::Demand { at_least } => {
                owner.demand().peak(self.limits.idle_timeout).max(at_least)
            }
        }
    }

    /// Keeps `instance` idle for a later call of `owner` and `key`, dropping
    /// the owner's oldest idle instances if it already has as many as
    /// allowed.
    pub(in crate::runtime) fn put(self: &Arc<Self>, owner: &Owner<T>, key: TenantKey, instance: T) {
        let limit = self.idle_limit(owner);
        if limit == 0 {
            return;
        }
        let mut state = self.lock();
        let owned = state
            .idle
            .iter()
            .filter(|idle| idle.owner == owner.id)
            .count();
        // Oldest first, down to one fewer than the limit (which falls as
        // the demand does).
        let mut evicted = Vec::new();
        for _ in limit..=owned {
            let oldest = state.idle.iter().position(|idle| idle.owner == owner.id);
            evicted.extend(oldest.and_then(|at| state.idle.remove(at)));
        }
        state.idle.push_back(Idle {
            owner: owner.id,
            key,
            since: Instant::now(),
            instance,
        });
        let start_reaper = !state.reaping;
        state.reaping = true;
        drop(state);
        // Dropping an instance resets its memory: never under the lock.
        drop(evicted);
        if start_reaper {
            self.start_reaper();
        }
    }

    /// Drops the instance idle longest, of any owner, to free its slots;
    /// false when none is idle.
    pub(in crate::runtime) fn evict_oldest(&self) -> bool {
        let oldest = self.lock().idle.pop_front();
        oldest.is_some()
    }

    /// Removes (and hands back, to be dropped outside the lock) every idle
    /// instance `doomed` picks.
    fn remove_where(&self, doomed: impl Fn(&Idle<T>) -> bool) -> Vec<T> {
        let mut state = self.lock();
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(state.idle.len());
        for idle in state.idle.drain(..) {
            if doomed(&idle) {
                removed.push(idle.instance);
            } else {
                kept.push_back(idle);
            }
        }
        state.idle = kept;
        removed
    }

    /// Drops instances idle past the timeout, as each one's time comes,
    /// until none is idle; `put` starts it again. Without an async runtime
    /// (unit tests) idle instances are only dropped when taken.
    fn start_reaper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.lock().reaping = false;
            return;
        };
        let pool: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(pool) = pool.upgrade() else { return };
                let timeout = pool.limits.idle_timeout;
                let next = {
                    let mut state = pool.lock();
                    let mut expired = Vec::new();
                    while state
                        .idle
                        .front()
                        .is_some_and(|idle| idle.since.elapsed() >= timeout)
                    {
                        expired.extend(state.idle.pop_front());
                    }
                    let next = state.idle.front().map(|idle| idle.since + timeout);
                    if next.is_none() {
                        state.reaping = false;
                    }
                    drop(state);
                    drop(expired);
                    next
                };
                drop(pool);
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_idle: usize, idle_timeout: Duration) -> Arc<WarmPool<u32>> {
        limited(IdleLimit::Fixed(max_idle), idle_timeout)
    }

    fn limited(limit: IdleLimit, idle_timeout: Duration) -> Arc<WarmPool<u32>> {
        WarmPool::new(ReuseLimits {
            max_idle_per_component: limit,
            idle_timeout,
            max_calls_per_instance: 1000,
        })
        .expect("pool")
    }

    fn map(pairs: &[(&str, &str)]) -> ConnectionMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_differ_for_any_difference_in_the_map() {
        let pool = pool(4, Duration::from_secs(1));
        let a = pool.key_of(&map(&[("token", "a"), ("region", "eu")]));
        assert_eq!(a, pool.key_of(&map(&[("region", "eu"), ("token", "a")])));
        assert_ne!(a, pool.key_of(&map(&[("token", "a"), ("region", "us")])));
        assert_ne!(a, pool.key_of(&map(&[("token", "a")])));
        // Lengths are encoded: moving bytes between key and value differs.
        assert_ne!(
            pool.key_of(&map(&[("ab", "c")])),
            pool.key_of(&map(&[("a", "bc")]))
        );
        assert_ne!(pool.key_of(&map(&[])), a);
        // Another server draws another key.
        let other = self::pool(4, Duration::from_secs(1));
        assert_ne!(other.key_of(&map(&[("token", "a"), ("region", "eu")])), a);
        assert!(!format!("{a:?}").contains("token"));
    }

    #[test]
    fn an_instance_goes_only_to_its_owner_and_tenant() {
        let pool = pool(4, Duration::from_secs(60));
        let (first, second) = (pool.owner(), pool.owner());
        let (a, b) = (
            pool.key_of(&map(&[("t", "a")])),
            pool.key_of(&map(&[("t", "b")])),
        );
        pool.put(&first, a, 1);
        assert_eq!(pool.take(&first, b), None);
        assert_eq!(pool.take(&second, a), None);
        assert_eq!(pool.take(&first, a), Some(1));
        assert_eq!(pool.take(&first, a), None);
    }

    #[test]
    fn the_newest_is_taken_and_the_oldest_evicted() {
        let pool = pool(4, Duration::from_secs(60));
        let owner = pool.owner();
        let a = pool.key_of(&map(&[]));
        for n in 1..=3 {
            pool.put(&owner, a, n);
        }
        assert_eq!(pool.take(&owner, a), Some(3));
        assert!(pool.evict_oldest());
        assert_eq!(pool.take(&owner, a), Some(2));
        assert!(!pool.evict_oldest());
    }

    #[test]
    fn idle_instances_are_bounded_per_owner() {
        let pool = pool(2, Duration::from_secs(60));
        let (first, second) = (pool.owner(), pool.owner());
        let a = pool.key_of(&map(&[]));
        for n in 1..=5 {
            pool.put(&first, a, n);
        }
        pool.put(&second, a, 10);
        assert_eq!(pool.idle_count(), 3);
        assert_eq!(pool.take(&first, a), Some(5));
        assert_eq!(pool.take(&first, a), Some(4));
        assert_eq!(pool.take(&first, a), None);
        let none_kept = self::pool(0, Duration::from_secs(60));
        let owner = none_kept.owner();
        none_kept.put(&owner, a, 1);
        assert_eq!(none_kept.idle_count(), 0);
    }

    #[test]
    fn by_default_idle_instances_follow_the_calls_in_flight() {
        let window = Duration::from_millis(100);
        let pool = limited(IdleLimit::Demand { at_least: 1 }, window);
        let (busy, quiet) = (pool.owner(), pool.owner());
        let a = pool.key_of(&map(&[]));
        let calls: Vec<_> = (0..5).map(|_| busy.call_started()).collect();
        drop(calls);
        for n in 1..=8 {
            pool.put(&busy, a, n);
        }
        assert_eq!(pool.idle_count(), 5, "five calls ran at once");
        // Another owner's demand is its own: the floor.
        for n in 1..=3 {
            pool.put(&quiet, a, n);
        }
        assert_eq!(pool.idle_count(), 6);
        assert_eq!(pool.take(&quiet, a), Some(3));
        // Two windows without a call: the limit falls back to the floor,
        // and the next instance kept evicts the surplus.
        std::thread::sleep(2 * window + Duration::from_millis(20));
        let call = busy.call_started();
        drop(call);
        pool.put(&busy, a, 9);
        assert_eq!(pool.idle_count(), 1);
        assert_eq!(pool.take(&busy, a), Some(9));
    }

    #[test]
    fn an_instance_idle_past_the_timeout_is_not_handed_out() {
        let pool = pool(4, Duration::from_millis(20));
        let owner = pool.owner();
        let a = pool.key_of(&map(&[]));
        pool.put(&owner, a, 1);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(pool.take(&owner, a), None);
    }

    #[tokio::test]
    async fn the_reaper_drops_instances_once_idle_past_the_timeout() {
        let pool = pool(4, Duration::from_millis(200));
        let owner = pool.owner();
        let a = pool.key_of(&map(&[]));
        pool.put(&owner, a, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        pool.put(&owner, a, 2);
        assert_eq!(pool.idle_count(), 2);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            pool.idle_count(),
            1,
            "the first is gone, the second not yet"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(pool.idle_count(), 0);
        // It starts again for the next idle instance.
        pool.put(&owner, a, 3);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn dropping_an_owner_drops_its_idle_instances() {
        let pool = pool(4, Duration::from_secs(60));
        let (first, second) = (pool.owner(), pool.owner());
        let a = pool.key_of(&map(&[]));
        pool.put(&first, a, 1);
        pool.put(&second, a, 2);
        drop(first);
        assert_eq!(pool.idle_count(), 1);
        assert_eq!(pool.take(&second, a), Some(2));
    }
}
