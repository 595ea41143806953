//! Why a connector call failed.

use std::fmt;

/// Why a connector call failed; the host turns it into a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The connector or its external service failed. The client sees
    /// `INTERNAL` with the message `failed to OP TYPE task with error: MESSAGE`.
    Failed(String),
    /// The request cannot be served as sent: inputs, template, connection or
    /// resource meta are missing or malformed. The client sees
    /// `INVALID_ARGUMENT`.
    InvalidRequest(String),
    /// The connector does not implement this operation. The client sees
    /// `UNIMPLEMENTED`.
    NotImplemented,
    /// A transient failure a retry may fix (the external service answered
    /// 429 or 5xx, or timed out). The client sees `UNAVAILABLE` with this
    /// message from every call, `get` included: Flyte's executor polls the
    /// task again, where a `RETRYABLE_FAILED` phase would end the attempt
    /// and launch the job anew. Return [`crate::Phase::RetryableFailed`]
    /// from `get` only for what the service itself reports as retryable.
    Retryable(String),
}

impl Error {
    /// An [`Error::Failed`] with the given message.
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }

    /// An [`Error::InvalidRequest`] with the given message.
    pub fn invalid_request(message: impl fmt::Display) -> Self {
        Self::InvalidRequest(message.to_string())
    }

    /// An [`Error::Retryable`] with the given message.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self::Retryable(message.to_string())
    }

    /// The message the client will see (empty for [`Error::NotImplemented`]).
    pub fn message(&self) -> &str {
        match self {
            Self::Failed(message) | Self::InvalidRequest(message) | Self::Retryable(message) => {
                message
            }
            Self::NotImplemented => "",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(message) => f.write_str(message),
            Self::InvalidRequest(message) => write!(f, "invalid request: {message}"),
            Self::NotImplemented => f.write_str("not implemented"),
            Self::Retryable(message) => write!(f, "{message} (retryable)"),
        }
    }
}

impl std::error::Error for Error {}

/// A JSON error in the connector's own code (say, reading the external
/// service's answer) is the connector's failure: [`Error::Failed`].
///
/// The SDK's own decoding of inputs, template and resource meta does not go
/// through this: it reports [`Error::InvalidRequest`] naming what it read.
impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self::Failed(error.to_string())
    }
}

/// An I/O error is the connector's failure: [`Error::Failed`].
impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self::Failed(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_message() {
        assert_eq!(Error::failed("boom").to_string(), "boom");
        assert_eq!(
            Error::invalid_request("no template").to_string(),
            "invalid request: no template"
        );
        assert_eq!(Error::NotImplemented.to_string(), "not implemented");
        assert_eq!(Error::invalid_request("x").message(), "x");
        assert_eq!(Error::NotImplemented.message(), "");
        assert_eq!(Error::retryable("busy").message(), "busy");
        assert_eq!(Error::retryable("busy").to_string(), "busy (retryable)");
    }

    #[test]
    fn serde_json_errors_are_failures() {
        let error = serde_json::from_str::<u8>("nope").map_err(Error::from);
        assert!(matches!(error, Err(Error::Failed(_))));
    }
}
