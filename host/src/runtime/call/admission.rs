//! Admission of calls into the instance pool: an instance takes one or more
//! call slots for as long as it lives, running a call or idle between calls
//! of one tenant (see `warm`). A call that finds too few free slots waits
//! its turn (first come, first served); only a full wait queue or the
//! client's own deadline turns it away.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connector::{ConnectorError, Deadline};

/// The call slots and the queue of calls waiting for them.
pub(in crate::runtime) struct Admission {
    /// Free slots. Tokio's semaphore hands released permits to waiters in
    /// arrival order, so a newcomer never overtakes a waiting call.
    slots: Arc<Semaphore>,
    total_slots: usize,
    max_queued: usize,
    queued: AtomicUsize,
    running: Arc<AtomicUsize>,
}

/// Slots held by one instance, running or idle; released when dropped.
pub(in crate::runtime) struct Slots {
    _permit: OwnedSemaphorePermit,
}

/// A call running in an instance, counted while it lives.
pub(in crate::runtime) struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub(in crate::runtime) fn new(total_slots: usize, max_queued: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(total_slots)),
            total_slots,
            max_queued,
            queued: AtomicUsize::new(0),
            running: Arc::default(),
        }
    }

    /// Call slots in all.
    pub(in crate::runtime) fn total_slots(&self) -> usize {
        self.total_slots
    }

    /// Slots taken by instances, running or idle.
    pub(in crate::runtime) fn slots_in_use(&self) -> usize {
        self.total_slots
            .saturating_sub(self.slots.available_permits())
    }

    /// Calls admitted and not finished.
    pub(in crate::runtime) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Calls waiting for slots.
    pub(in crate::runtime) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Counts a call as running until the guard is dropped.
    pub(in crate::runtime) fn start_running(&self) -> Running {
        self.running.fetch_add(1, Ordering::AcqRel);
        Running(Arc::clone(&self.running))
    }

    /// Takes `slots` slots if they are free now. With waiters in line there
    /// are no free slots: released ones go to the waiters first, so this
    /// cannot jump the queue.
    pub(in crate::runtime) fn try_take(&self, slots: u32) -> Option<Slots> {
        Arc::clone(&self.slots)
            .try_acquire_many_owned(slots)
            .ok()
            .map(|permit| Slots { _permit: permit })
    }

    /// Takes `slots` slots, waiting in line for them if they are busy.
    pub(in crate::runtime) async fn admit(
        &self,
        slots: u32,
        deadline: Deadline,
    ) -> Result<Slots, ConnectorError> {
        if let Some(taken) = self.try_take(slots) {
            return Ok(taken);
        }
        let place = QueuePlace::take(&self.queued);
        if place.ahead >= self.max_queued {
            return Err(ConnectorError::QueueFull {
                slots: self.total_slots,
                queued: place.ahead,
            });
        }
        let waiting_since = Instant::now();
        let acquire = Arc::clone(&self.slots).acquire_many_owned(slots);
        let acquired = match deadline.instant() {
            Some(at) => tokio::time::timeout_at(at.into(), acquire)
                .await
                .map_err(|_| ConnectorError::QueueTimeout {
                    waited: waiting_since.elapsed(),
                })?,
            None => acquire.await,
        };
        // The semaphore is never closed while the runtime exists.
        let permit =
            acquired.map_err(|_| ConnectorError::Failed("the server is shutting down".into()))?;
        Ok(Slots { _permit: permit })
    }
}

/// A place in the wait queue, given up when dropped (admitted, timed out or
/// abandoned by a client that went away).
struct QueuePlace<'a> {
    queued: &'a AtomicUsize,
    /// Calls that were waiting when this one joined.
    ahead: usize,
}

impl<'a> QueuePlace<'a> {
    fn take(queued: &'a AtomicUsize) -> Self {
        let ahead = queued.fetch_add(1, Ordering::AcqRel);
        Self { queued, ahead }
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_call_waits_for_a_slot_and_gets_it_when_one_is_freed() {
        let admission = Arc::new(Admission::new(1, 10));
        let first = admission.admit(1, Deadline::NONE).await.expect("free slot");
        let waiting = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move { admission.admit(1, Deadline::NONE).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(admission.queued(), 1);
        drop(first);
        assert!(waiting.await.expect("join"));
        assert_eq!(admission.queued(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_passed_deadline_gives_up() {
        let admission = Arc::new(Admission::new(1, 1));
        let _busy = admission.admit(1, Deadline::NONE).await.expect("free slot");
        let waiting = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move {
                admission
                    .admit(1, Deadline::after(Duration::from_millis(100)))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = admission.admit(1, Deadline::NONE).await;
        assert!(matches!(
            refused,
            Err(ConnectorError::QueueFull {
                slots: 1,
                queued: 1
            })
        ));
        let timed_out = waiting.await.expect("join");
        assert!(matches!(
            timed_out,
            Err(ConnectorError::QueueTimeout { .. })
        ));
        assert_eq!(admission.queued(), 0);
    }

    #[tokio::test]
    async fn a_heavy_call_takes_several_slots() {
        let admission = Admission::new(3, 0);
        let heavy = admission.admit(2, Deadline::NONE).await.expect("two slots");
        assert_eq!(admission.slots_in_use(), 2);
        assert!(admission.admit(2, Deadline::NONE).await.is_err());
        drop(heavy);
        assert_eq!(admission.slots_in_use(), 0);
    }
}
