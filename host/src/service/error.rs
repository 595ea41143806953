//! Every way an RPC can fail, and the one place each becomes a gRPC status
//! and a metrics `error_code`.

use tonic::{Code, Status};

use crate::{
    connector::{ConnectorError, Operation},
    convert::ConvertError,
};

/// Why an RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No connector serves the task type (name given).
    #[error("Cannot find connector for task type: {0}.")]
    NotFound(String),
    /// No connector has this name (GetConnector).
    #[error("Cannot find connector for name: {0}.")]
    UnknownConnector(String),
    /// The request cannot be served as sent.
    #[error("{0}")]
    InvalidArgument(String),
    /// An input literal cannot be given to a connector.
    #[error("invalid inputs: {0}")]
    InvalidInput(ConvertError),
    /// The connector failed, or returned something that cannot be sent back.
    #[error("failed to {} {task_type} task with error:\n {cause}.", operation.verb())]
    Failed {
        /// What was asked of the connector.
        operation: Operation,
        /// The task type.
        task_type: String,
        /// What went wrong.
        cause: Failure,
    },
}

/// What went wrong in a call of a connector.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The connector failed.
    #[error("{0}")]
    Connector(#[from] ConnectorError),
    /// Its answer does not convert to protobuf (outputs to literals).
    #[error("{0}")]
    Answer(#[from] ConvertError),
}

impl ServiceError {
    /// The gRPC status code.
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound(_) | Self::UnknownConnector(_) => Code::NotFound,
            Self::InvalidArgument(_) | Self::InvalidInput(_) => Code::InvalidArgument,
            Self::Failed {
                cause: Failure::Answer(_),
                ..
            } => Code::Internal,
            Self::Failed {
                cause: Failure::Connector(error),
                ..
            } => match error {
                ConnectorError::Failed(_)
                | ConnectorError::Crashed(_)
                | ConnectorError::TooLarge { .. } => Code::Internal,
                ConnectorError::InvalidRequest(_) => Code::InvalidArgument,
                ConnectorError::NotImplemented => Code::Unimplemented,
                ConnectorError::DeadlineExceeded(_) | ConnectorError::QueueTimeout { .. } => {
                    Code::DeadlineExceeded
                }
                ConnectorError::QueueFull { .. } | ConnectorError::MemoryBudget(_) => {
                    Code::ResourceExhausted
                }
                ConnectorError::Retryable(_) => Code::Unavailable,
            },
        }
    }

    /// The HTTP-style `error_code` label of the failure metric, as the
    /// Python server reports it ("404", "500"), extended for the cases it
    /// cannot tell apart.
    pub fn metrics_code(&self) -> &'static str {
        match self.code() {
            Code::NotFound => "404",
            Code::InvalidArgument => "400",
            Code::Unimplemented => "501",
            Code::ResourceExhausted | Code::Unavailable => "503",
            Code::DeadlineExceeded => "504",
            _ => "500",
        }
    }

    /// Whether the guest itself misbehaved (trap, panic, out of memory or time).
    pub fn is_guest_crash(&self) -> bool {
        matches!(
            self,
            Self::Failed {
                cause: Failure::Connector(
                    ConnectorError::Crashed(_) | ConnectorError::DeadlineExceeded(_)
                ),
                ..
            }
        )
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_python_server() {
        assert_eq!(
            ServiceError::NotFound("nope".into()).to_string(),
            "Cannot find connector for task type: nope."
        );
        let failed = ServiceError::Failed {
            operation: Operation::Create,
            task_type: "fail".into(),
            cause: ConnectorError::Failed("the external service said no".into()).into(),
        };
        assert_eq!(
            failed.to_string(),
            "failed to create fail task with error:\n the external service said no."
        );
        assert_eq!(failed.code(), Code::Internal);
        assert_eq!(failed.metrics_code(), "500");
    }

    #[test]
    fn connector_errors_map_to_precise_codes() {
        let code = |error: ConnectorError| {
            ServiceError::Failed {
                operation: Operation::Get,
                task_type: "t".into(),
                cause: error.into(),
            }
            .code()
        };
        assert_eq!(code(ConnectorError::NotImplemented), Code::Unimplemented);
        assert_eq!(
            code(ConnectorError::InvalidRequest("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(ConnectorError::QueueFull {
                slots: 4,
                queued: 8
            }),
            Code::ResourceExhausted
        );
        assert_eq!(
            code(ConnectorError::QueueTimeout {
                waited: std::time::Duration::from_secs(1)
            }),
            Code::DeadlineExceeded
        );
        assert_eq!(
            code(ConnectorError::TooLarge {
                what: "outputs",
                size: 2,
                limit: 1
            }),
            Code::Internal
        );
        assert_eq!(
            code(ConnectorError::DeadlineExceeded(
                std::time::Duration::from_secs(1)
            )),
            Code::DeadlineExceeded
        );
        assert_eq!(code(ConnectorError::Crashed("trap".into())), Code::Internal);
        assert_eq!(
            code(ConnectorError::Retryable("busy".into())),
            Code::Unavailable
        );
        assert_eq!(
            code(ConnectorError::MemoryBudget("full".into())),
            Code::ResourceExhausted
        );
    }
}
