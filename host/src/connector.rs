//! What a connector is to the rest of the host: the operations it serves and
//! the plain values that cross into and out of it.
//!
//! Nothing here knows protobuf or wasmtime. The gRPC services convert protobuf
//! messages into these types; the runtime converts them into guest calls.

use std::{
    collections::BTreeMap,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use serde_json::Value;

use crate::file_stamp::FileRead;

/// A task type a connector serves. Connectors are registered under it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskCategory {
    /// Task type name, as in `TaskTemplate.type`.
    pub name: String,
    /// Task type version, as in `TaskTemplate.task_type_version`.
    pub version: i32,
}

impl fmt::Display for TaskCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (v{})", self.name, self.version)
    }
}

/// The operations a connector serves. One name each for the metrics label,
/// the verb of error messages and the guest function it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// CreateTask: start a task.
    Create,
    /// GetTask: poll a task.
    Get,
    /// DeleteTask: cancel a task.
    Delete,
    /// GetTaskMetrics.
    GetMetrics,
    /// GetTaskLogs.
    GetLogs,
}

impl Operation {
    /// The `operation` label of the request metrics, as the Python server
    /// names it (it records only create, get and delete).
    pub fn label(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Get => "get",
            Self::Delete => "delete",
            Self::GetMetrics => "get_metrics",
            Self::GetLogs => "get_logs",
        }
    }

    /// The verb of `failed to VERB TYPE task with error: ...`.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Get => "get",
            Self::Delete => "delete",
            Self::GetMetrics => "get metrics for",
            Self::GetLogs => "get logs for",
        }
    }

    /// The function of the `flyte:connector/connector` interface it calls.
    pub fn guest_function(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Get => "get",
            Self::Delete => "delete",
            Self::GetMetrics => "get-metrics",
            Self::GetLogs => "get-logs",
        }
    }

    /// Whether the Python server's request metrics cover it.
    pub fn has_request_metrics(self) -> bool {
        matches!(self, Self::Create | Self::Get | Self::Delete)
    }
}

/// When the client stops waiting for an answer: the gRPC deadline it sent,
/// if any. A call still waiting for a slot then gives up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: the client waits as long as it takes.
    pub const NONE: Self = Self(None);

    /// A deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(Some(instant))
    }

    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now().checked_add(timeout))
    }

    /// The instant, if there is a deadline.
    pub fn instant(self) -> Option<Instant> {
        self.0
    }
}

/// A connector's name and the task types it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// Display name; connectors are grouped under it in `ListConnectors`.
    pub name: String,
    /// Task types served.
    pub task_categories: Vec<TaskCategory>,
}

/// `flyteidl2.core.TaskExecution.Phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not set.
    Undefined,
    /// Accepted, waiting to start.
    Queued,
    /// Running on the external service.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Aborted.
    Aborted,
    /// Failed for good.
    Failed,
    /// Starting up.
    Initializing,
    /// Waiting for resources on the external service.
    WaitingForResources,
    /// Failed in a way a retry may fix.
    RetryableFailed,
}

/// A link shown next to the task in the Flyte UI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskLog {
    /// Label of the link.
    pub name: String,
    /// Where it points.
    pub uri: String,
    /// Whether the target is ready to be opened.
    pub ready: bool,
    /// Icon shown beside the link.
    pub icon_uri: String,
    /// Show the link while the task is still pending.
    pub show_while_pending: bool,
    /// Hide the link once the task has finished.
    pub hide_once_finished: bool,
    /// What the link opens.
    pub link_type: LinkType,
}

/// What a log link opens (`flyteidl2.core.TaskLog.LinkType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkType {
    /// An external log viewer.
    #[default]
    External,
    /// A dashboard of the running workload.
    Dashboard,
    /// An interactive development environment.
    Ide,
}

/// One named output a connector produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Output name.
    pub name: String,
    /// The value as JSON.
    pub value: Value,
    /// `flyteidl2.core.LiteralType` as proto3 JSON, when the connector gave one.
    pub literal_type: Option<Value>,
}

/// The state of a task on the external service.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Where the task stands.
    pub phase: Phase,
    /// Human-readable status.
    pub message: String,
    /// Links for the UI.
    pub log_links: Vec<TaskLog>,
    /// Outputs, once there are any.
    pub outputs: Option<Vec<Output>>,
    /// Extra information for the client, a JSON object.
    pub custom_info: Option<serde_json::Map<String, Value>>,
}

/// Secrets and configs of the task's connection, merged (configs win).
pub type ConnectionMap = BTreeMap<String, String>;

/// Everything a connector needs to start a task.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Input name → value.
    pub inputs: serde_json::Map<String, Value>,
    /// Input name → `LiteralType` as proto3 JSON.
    pub input_types: serde_json::Map<String, Value>,
    /// The `TaskTemplate` as proto3 JSON.
    pub template: Value,
    /// Where outputs should be written.
    pub output_prefix: String,
    /// `TaskExecutionMetadata` as proto3 JSON (`{}` when absent).
    pub task_execution_metadata: Value,
    /// Merged connection secrets and configs.
    pub connection: ConnectionMap,
}

/// Poll a task.
#[derive(Debug, Clone)]
pub struct GetRequest {
    /// The task's type.
    pub task_category: TaskCategory,
    /// What `create` returned.
    pub resource_meta: Vec<u8>,
    /// Where outputs should be written.
    pub output_prefix: String,
    /// Merged connection secrets and configs.
    pub connection: ConnectionMap,
}

/// Cancel a task.
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    /// The task's type.
    pub task_category: TaskCategory,
    /// What `create` returned.
    pub resource_meta: Vec<u8>,
    /// Merged connection secrets and configs.
    pub connection: ConnectionMap,
}

/// Ask for a task's metrics.
#[derive(Debug, Clone)]
pub struct MetricsRequest {
    /// The task's type.
    pub task_category: TaskCategory,
    /// What `create` returned.
    pub resource_meta: Vec<u8>,
    /// Metric queries.
    pub queries: Vec<String>,
    /// Start of the window, RFC 3339.
    pub start_time: Option<String>,
    /// End of the window, RFC 3339.
    pub end_time: Option<String>,
    /// Resolution, proto3 duration string.
    pub step: Option<String>,
    /// The connection map: the gRPC request carries none, so it holds what
    /// the plugin's capabilities fill in (credentials from the pod).
    pub connection: ConnectionMap,
}

/// One metric series.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    /// The metric's name.
    pub metric: String,
    /// Its data, a JSON object.
    pub data: serde_json::Map<String, Value>,
}

/// Ask for a page of a task's logs.
#[derive(Debug, Clone)]
pub struct LogsRequest {
    /// The task's type.
    pub task_category: TaskCategory,
    /// What `create` returned.
    pub resource_meta: Vec<u8>,
    /// Maximum number of lines (0: the connector decides).
    pub lines: u64,
    /// Page token; empty for the first page.
    pub token: String,
    /// The connection map: the gRPC request carries none, so it holds what
    /// the plugin's capabilities fill in (credentials from the pod).
    pub connection: ConnectionMap,
}

/// A page of log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsPage {
    /// The lines.
    pub lines: Vec<String>,
    /// Token of the next page; empty when there is none.
    pub next_token: String,
}

/// Why a connector call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The connector reported a failure of its own or of its external service.
    #[error("{0}")]
    Failed(String),
    /// The connector says the request cannot be served as sent.
    #[error("{0}")]
    InvalidRequest(String),
    /// The connector does not implement the operation.
    #[error("not implemented by this connector")]
    NotImplemented,
    /// A transient failure a retry may fix (the external service answered
    /// 429 or 5xx, or timed out).
    #[error("{0}")]
    Retryable(String),
    /// The connector crashed: a trap, a panic, running out of memory.
    #[error("connector crashed: {0}")]
    Crashed(String),
    /// The call ran past its deadline and was stopped.
    #[error("connector call exceeded its deadline of {0:?}")]
    DeadlineExceeded(Duration),
    /// Every call slot is taken and the queue of waiting calls is full.
    #[error(
        "all {slots} connector call slots are busy and {queued} calls are already waiting for \
         one; try again later"
    )]
    QueueFull {
        /// Call slots.
        slots: usize,
        /// Calls waiting.
        queued: usize,
    },
    /// The client's deadline passed while the call waited for a slot.
    #[error("the client's deadline passed after waiting {waited:?} for a free connector call slot")]
    QueueTimeout {
        /// How long the call waited.
        waited: Duration,
    },
    /// The call did not fit in the server's memory budget (it says why).
    #[error("the call was refused memory: {0}")]
    MemoryBudget(String),
    /// The connector returned more than the server accepts.
    #[error("the connector returned {what} of {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// What was too large ("the resource meta", "outputs", ...).
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// A loaded connector. The registry holds these; the gRPC services call them.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Name and task types.
    fn info(&self) -> &ConnectorInfo;
    /// Where the connector came from (a file path), for logs and the start-up table.
    fn source(&self) -> &str;
    /// Files its load read besides its component and manifest
    /// (certificates, credentials): a change to any of them reloads it.
    fn files_read(&self) -> &[FileRead] {
        &[]
    }
    /// Start a task; returns the resource meta the client stores.
    async fn create(
        &self,
        request: CreateRequest,
        deadline: Deadline,
    ) -> Result<Vec<u8>, ConnectorError>;
    /// Report a task's state.
    async fn get(
        &self,
        request: GetRequest,
        deadline: Deadline,
    ) -> Result<Resource, ConnectorError>;
    /// Cancel a task.
    async fn delete(
        &self,
        request: DeleteRequest,
        deadline: Deadline,
    ) -> Result<(), ConnectorError>;
    /// Report a task's metrics.
    async fn get_metrics(
        &self,
        request: MetricsRequest,
        deadline: Deadline,
    ) -> Result<Vec<MetricResult>, ConnectorError>;
    /// Report a page of a task's logs.
    async fn get_logs(
        &self,
        request: LogsRequest,
        deadline: Deadline,
    ) -> Result<LogsPage, ConnectorError>;
}

/// A shared handle to a loaded connector.
pub type SharedConnector = Arc<dyn Connector>;
