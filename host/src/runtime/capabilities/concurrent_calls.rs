//! The calls an instance of the async world (`flyte:connector/async-plugin`,
//! since 1.3.0) serves at once, each known by the guest task that serves it.
//!
//! Several calls of one tenant may be in one instance at the same time, so
//! an import cannot take "the instance's call" as the sync world's do: it
//! asks the store which task called it ([`call_of`]: the root of the
//! component model's async call stack) and finds that task's call here —
//! its deadline, its log, and whether it has ended. The call machinery
//! registers a call when it starts the task and ends it when the call
//! returns or is given up; the waits of an ended call end at once.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Instant,
};

use tokio::sync::{Semaphore, watch};
use wasmtime::{
    AsContextMut,
    component::{Access, GuestTaskId},
};

use super::capability::{CallScope, Capability, CapabilityView, ViewOf, nanos_left};
use crate::runtime::call::GuestLog;

/// How a call ended, as its remaining waits learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::runtime) enum CallEnd {
    /// The guest returned its answer.
    Returned,
    /// The host gave the call up: its deadline passed or its client left.
    GivenUp,
}

/// One call in flight in an instance of the async world.
pub(in crate::runtime) struct ConcurrentCall {
    scope: CallScope,
    log: GuestLog,
    /// The span of the call's RPC and its `guest_call` span (a span only
    /// traces have): what its imports do (an HTTP request's span, a log
    /// line) belongs under them, though the driver's task runs it.
    spans: (tracing::Span, tracing::Span),
    end: watch::Sender<Option<CallEnd>>,
    /// The permits of its outbound requests open at once (its own, as a
    /// call of the sync world has its instance's), made at its first.
    open_requests: OnceLock<Arc<Semaphore>>,
}

impl ConcurrentCall {
    /// A call with `scope`, whose guest lines go to `log`, made in the span
    /// of its RPC; its imports' spans go under `guest_call`.
    pub(in crate::runtime) fn new(
        scope: CallScope,
        log: GuestLog,
        guest_call: tracing::Span,
    ) -> Self {
        Self {
            scope,
            log,
            spans: (tracing::Span::current(), guest_call),
            end: watch::Sender::new(None),
            open_requests: OnceLock::new(),
        }
    }

    /// The permits of its outbound requests, made by `new` at its first.
    pub(in crate::runtime) fn open_requests(
        &self,
        new: impl FnOnce() -> Arc<Semaphore>,
    ) -> Arc<Semaphore> {
        Arc::clone(self.open_requests.get_or_init(new))
    }

    /// Its log.
    pub(in crate::runtime) fn log(&self) -> &GuestLog {
        &self.log
    }

    /// Runs `work` of its imports in its spans: its RPC's (which logs
    /// show) and within it its `guest_call` (which traces show).
    pub(in crate::runtime) fn in_scope<R>(&self, work: impl FnOnce() -> R) -> R {
        let (rpc, guest_call) = &self.spans;
        rpc.in_scope(|| guest_call.in_scope(work))
    }

    /// Nanoseconds left before its deadline; 0 once it has ended.
    pub(in crate::runtime) fn time_left(&self) -> u64 {
        if self.end.borrow().is_some() {
            return 0;
        }
        nanos_left(self.scope.deadline)
    }

    /// Whether its deadline has passed by `now`.
    pub(in crate::runtime) fn overdue(&self, now: Instant) -> bool {
        self.scope.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// Ends it (the first end counts): its waits end at once. Whether this
    /// was its end.
    pub(in crate::runtime) fn end(&self, how: CallEnd) -> bool {
        self.end.send_if_modified(|end| {
            if end.is_some() {
                return false;
            }
            *end = Some(how);
            true
        })
    }

    /// How it ended, if it has.
    pub(in crate::runtime) fn ended(&self) -> Option<CallEnd> {
        *self.end.borrow()
    }

    /// Resolves when it ends, with how.
    pub(in crate::runtime) async fn until_ended(&self) -> CallEnd {
        let mut end = self.end.subscribe();
        match end.wait_for(Option::is_some).await {
            Ok(end) => end.unwrap_or(CallEnd::GivenUp),
            // The sender lives in `self`, so it cannot be dropped while
            // this borrows it; ended, to be safe.
            Err(_) => CallEnd::GivenUp,
        }
    }
}

/// The calls an instance serves now, by the guest task serving each.
#[derive(Default)]
pub struct ConcurrentCalls {
    calls: HashMap<GuestTaskId, Arc<ConcurrentCall>>,
}

impl ConcurrentCalls {
    /// Registers `call`, served by `task`.
    pub(in crate::runtime) fn insert(&mut self, task: GuestTaskId, call: Arc<ConcurrentCall>) {
        self.calls.insert(task, call);
    }

    /// Forgets the call of `task`.
    pub(in crate::runtime) fn remove(&mut self, task: GuestTaskId) {
        self.calls.remove(&task);
    }

    /// The call of `task`, if it is registered.
    pub(in crate::runtime) fn get(&self, task: GuestTaskId) -> Option<&Arc<ConcurrentCall>> {
        self.calls.get(&task)
    }
}

/// The call of the guest task that made the import `access` serves: the
/// root of the store's async call stack, if it is a registered call of the
/// async world (never in the sync world, whose calls install their scope on
/// the instance).
pub(in crate::runtime) fn call_of<T, C: Capability>(
    access: &mut Access<'_, T, ViewOf<C>>,
) -> Option<Arc<ConcurrentCall>> {
    let mut store = access.as_context_mut();
    // The sync world's engine keeps no async call stack to ask.
    if !store.engine().get_concurrency_support() {
        return None;
    }
    let root = store.async_call_stack().ok()?.last()?;
    let view: CapabilityView<'_, C::State> = access.get();
    view.calls.get(root).cloned()
}
