"""Errors a connector raises to say how its call failed.

Any other exception fails the call too: the client sees INTERNAL with the
exception's last traceback line (`KeyError: 'run_id'`), and the whole
traceback goes to the host's log.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Fails the call with exactly this message: the client sees INTERNAL
    with the text, and no traceback is logged (the connector has said what
    went wrong). Base of the errors below."""


class InvalidRequest(ConnectorError):
    """The request cannot be served as sent (a template or input the
    connector cannot run). The client sees INVALID_ARGUMENT."""


class Retryable(ConnectorError):
    """A transient failure that a retry may fix (throttling, a 5xx, a
    timeout). The client sees UNAVAILABLE from every call, `get` included:
    Flyte's executor polls a GetTask that failed so again and the job runs
    on, where a RETRYABLE_FAILED phase would end the attempt and launch the
    job anew. When the external service itself reports that the job failed
    in a way a new attempt may fix (Databricks' INTERNAL_ERROR), `get`
    returns `Resource(phase=TaskExecution.RETRYABLE_FAILED)` instead."""
