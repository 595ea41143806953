"""Task phases: `flyteidl2.core.TaskExecution.Phase`, and the table flyte
uses to map an external service's state to one."""

from __future__ import annotations

import enum


class Phase(enum.IntEnum):
    """A task's phase, numbered as `flyteidl2.core.TaskExecution.Phase`."""

    UNDEFINED = 0
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    ABORTED = 4
    FAILED = 5
    INITIALIZING = 6
    WAITING_FOR_RESOURCES = 7
    RETRYABLE_FAILED = 8


class TaskExecution:
    """Stands in for `flyteidl2.core.execution_pb2.TaskExecution`, so that
    connector code writing `TaskExecution.SUCCEEDED` or
    `TaskExecution.Phase` runs unchanged."""

    Phase = Phase
    UNDEFINED = Phase.UNDEFINED
    QUEUED = Phase.QUEUED
    RUNNING = Phase.RUNNING
    SUCCEEDED = Phase.SUCCEEDED
    ABORTED = Phase.ABORTED
    FAILED = Phase.FAILED
    INITIALIZING = Phase.INITIALIZING
    WAITING_FOR_RESOURCES = Phase.WAITING_FOR_RESOURCES
    RETRYABLE_FAILED = Phase.RETRYABLE_FAILED


_STATES = {
    **dict.fromkeys(["failed", "timeout", "timedout", "canceled", "cancelled", "skipped"], Phase.FAILED),
    "internal_error": Phase.RETRYABLE_FAILED,
    **dict.fromkeys(["done", "succeeded", "success", "completed"], Phase.SUCCEEDED),
    **dict.fromkeys(["running", "terminating"], Phase.RUNNING),
    "pending": Phase.INITIALIZING,
}


def convert_to_flyte_phase(state: str) -> Phase:
    """The phase of an external service's state, case-insensitively, as
    flyte's `convert_to_flyte_phase` maps it; `ValueError` for any other
    state."""
    state = state.lower()
    try:
        return _STATES[state]
    except KeyError:
        raise ValueError(f"Unrecognized state: {state}") from None


def is_terminal_phase(phase: int) -> bool:
    """Whether the task has finished: succeeded, aborted or failed."""
    return phase in (Phase.SUCCEEDED, Phase.ABORTED, Phase.FAILED)
