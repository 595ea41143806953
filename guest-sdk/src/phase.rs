//! The phase of a task (`flyteidl2.core.TaskExecution.Phase`).

use crate::Error;

/// The phase of a task, as Flyte sees it (`flyteidl2.core.TaskExecution.Phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// Not known.
    #[default]
    Undefined,
    /// Accepted, waiting to be scheduled.
    Queued,
    /// Running on the external service.
    Running,
    /// Finished successfully; the resource may carry outputs.
    Succeeded,
    /// Stopped before it finished.
    Aborted,
    /// Finished with an error that a retry will not fix.
    Failed,
    /// Being set up.
    Initializing,
    /// Waiting for resources on the external service.
    WaitingForResources,
    /// Failed in a way a retry may fix.
    RetryableFailed,
}

impl Phase {
    /// Maps a state reported by an external service to a phase, as the
    /// Python connector server's `convert_to_flyte_phase` does
    /// (case-insensitively):
    ///
    /// | state | phase |
    /// | --- | --- |
    /// | failed, timeout, timedout, canceled, cancelled, skipped | [`Phase::Failed`] |
    /// | internal_error | [`Phase::RetryableFailed`] |
    /// | done, succeeded, success, completed | [`Phase::Succeeded`] |
    /// | running, terminating | [`Phase::Running`] |
    /// | pending | [`Phase::Initializing`] |
    ///
    /// Any other state is [`Error::Failed`] with the message
    /// `Unrecognized state: STATE` (the state in lower case, as Python
    /// reports it).
    pub fn from_state(state: &str) -> Result<Self, Error> {
        let state = state.to_lowercase();
        match state.as_str() {
            "failed" | "timeout" | "timedout" | "canceled" | "cancelled" | "skipped" => {
                Ok(Self::Failed)
            }
            "internal_error" => Ok(Self::RetryableFailed),
            "done" | "succeeded" | "success" | "completed" => Ok(Self::Succeeded),
            "running" | "terminating" => Ok(Self::Running),
            "pending" => Ok(Self::Initializing),
            _ => Err(Error::Failed(format!("Unrecognized state: {state}"))),
        }
    }

    /// Whether the task has finished: succeeded, aborted or failed (as the
    /// Python server's `is_terminal_phase`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Aborted | Self::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_table() {
        let table = [
            ("failed", Phase::Failed),
            ("timeout", Phase::Failed),
            ("timedout", Phase::Failed),
            ("canceled", Phase::Failed),
            ("cancelled", Phase::Failed),
            ("skipped", Phase::Failed),
            ("internal_error", Phase::RetryableFailed),
            ("done", Phase::Succeeded),
            ("succeeded", Phase::Succeeded),
            ("success", Phase::Succeeded),
            ("completed", Phase::Succeeded),
            ("running", Phase::Running),
            ("terminating", Phase::Running),
            ("pending", Phase::Initializing),
        ];
        for (state, phase) in table {
            assert_eq!(Phase::from_state(state), Ok(phase), "{state}");
            let upper = state.to_uppercase();
            assert_eq!(Phase::from_state(&upper), Ok(phase), "{upper}");
        }
        assert_eq!(Phase::from_state("Cancelled"), Ok(Phase::Failed));
    }

    #[test]
    fn unknown_state() {
        assert_eq!(
            Phase::from_state("Exploded"),
            Err(Error::Failed("Unrecognized state: exploded".into()))
        );
        assert_eq!(
            Phase::from_state(""),
            Err(Error::Failed("Unrecognized state: ".into()))
        );
        // Exact words only, as in Python.
        assert!(Phase::from_state(" running").is_err());
        assert!(Phase::from_state("queued").is_err());
    }

    #[test]
    fn terminal() {
        assert!(Phase::Succeeded.is_terminal());
        assert!(Phase::Failed.is_terminal());
        assert!(Phase::Aborted.is_terminal());
        assert!(!Phase::RetryableFailed.is_terminal());
        assert!(!Phase::Running.is_terminal());
    }
}
