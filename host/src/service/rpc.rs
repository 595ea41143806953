//! Each task RPC in the domain's terms ([`Rpc`]): which task type it names
//! (for the metrics label), the category of the connector it needs, the
//! connector request it decodes into ([`mapping`]), the connector call it
//! makes, and the response its answer becomes. The service runs every one
//! of them through one path (`AsyncConnector::serve`).

use std::{future::Future, pin::Pin};

use opentelemetry::trace::TraceId;
use prost::Message;

use super::{ServiceError, mapping};
use crate::{
    connector::{
        ConnectorError, CreateRequest, Deadline, DeleteRequest, GetRequest, LogsPage, LogsRequest,
        MetricResult, MetricsRequest, Operation, Resource, SharedConnector, TaskCategory,
    },
    convert::ConvertError,
    proto::connector as pb,
    telemetry,
};

/// A connector call under way.
pub(super) type Pending<T> = Pin<Box<dyn Future<Output = Result<T, ConnectorError>> + Send>>;

/// A task RPC's message, as the service decodes and answers it.
pub(super) trait Rpc: Sized + Send {
    /// What it asks of the connector.
    const OPERATION: Operation;
    /// The RPC's name, as its trace span is named.
    const RPC_NAME: &'static str;
    /// The connector request it becomes.
    type Request: Send + 'static;
    /// What the connector answers.
    type Answer: Send + 'static;
    /// The gRPC response.
    type Response: Send;

    /// The task type it names ("" when none), for the metrics label.
    fn task_type(&self) -> &str;

    /// The encoded size of its inputs, for CreateTask's input metric.
    fn input_bytes(&self) -> Option<usize> {
        None
    }

    /// The category of the connector it needs.
    fn category(&self) -> Result<TaskCategory, ServiceError>;

    /// The Flyte run's trace it belongs to, if it says: derived from
    /// CreateTask's task execution metadata, or taken off the resource meta
    /// where CreateTask left it (see [`telemetry`]).
    fn take_run_trace(&mut self) -> Option<TraceId> {
        None
    }

    /// Leaves `trace_id` in the response for the task's later calls.
    fn carry_trace(_response: &mut Self::Response, _trace_id: TraceId) {}

    /// The connector request, once its connector is known (a request for an
    /// unknown task type is NOT_FOUND before anything is converted).
    fn into_request(self) -> Result<Self::Request, ServiceError>;

    /// Calls the connector.
    fn call(
        connector: SharedConnector,
        request: Self::Request,
        deadline: Deadline,
    ) -> Pending<Self::Answer>;

    /// The response the answer becomes.
    fn respond(answer: Self::Answer) -> Result<Self::Response, ConvertError>;

    /// The size on the wire of the largest message of the response.
    fn wire_size(response: &Self::Response) -> usize;
}

/// The task category a request names, INVALID_ARGUMENT when it names none.
fn category_of(
    category: Option<&pb::TaskCategory>,
    rpc: &str,
) -> Result<TaskCategory, ServiceError> {
    mapping::task_category(category.cloned(), rpc)
}

fn task_type_of(category: Option<&pb::TaskCategory>) -> &str {
    category.map_or("", |category| category.name.as_str())
}

impl Rpc for pb::CreateTaskRequest {
    const OPERATION: Operation = Operation::Create;
    const RPC_NAME: &'static str = "flyteidl2.connector.AsyncConnectorService/CreateTask";
    type Request = CreateRequest;
    type Answer = Vec<u8>;
    type Response = pb::CreateTaskResponse;

    fn task_type(&self) -> &str {
        self.template.as_ref().map_or("", |t| t.r#type.as_str())
    }

    fn input_bytes(&self) -> Option<usize> {
        Some(self.inputs.as_ref().map_or(0, Message::encoded_len))
    }

    fn category(&self) -> Result<TaskCategory, ServiceError> {
        mapping::create_category(self)
    }

    fn take_run_trace(&mut self) -> Option<TraceId> {
        // Nothing to take off a create's request: derived only for traces.
        if !telemetry::enabled() {
            return None;
        }
        telemetry::trace_id_for_task(self.task_execution_metadata.as_ref())
    }

    fn carry_trace(response: &mut pb::CreateTaskResponse, trace_id: TraceId) {
        telemetry::append_to_meta(&mut response.resource_meta, trace_id);
    }

    fn into_request(self) -> Result<CreateRequest, ServiceError> {
        mapping::create_request(self)
    }

    fn call(
        connector: SharedConnector,
        request: CreateRequest,
        deadline: Deadline,
    ) -> Pending<Vec<u8>> {
        Box::pin(async move { connector.create(request, deadline).await })
    }

    fn respond(resource_meta: Vec<u8>) -> Result<pb::CreateTaskResponse, ConvertError> {
        Ok(pb::CreateTaskResponse { resource_meta })
    }

    fn wire_size(response: &pb::CreateTaskResponse) -> usize {
        response.encoded_len()
    }
}

impl Rpc for pb::GetTaskRequest {
    const OPERATION: Operation = Operation::Get;
    const RPC_NAME: &'static str = "flyteidl2.connector.AsyncConnectorService/GetTask";
    type Request = GetRequest;
    type Answer = Resource;
    type Response = pb::GetTaskResponse;

    fn task_type(&self) -> &str {
        task_type_of(self.task_category.as_ref())
    }

    fn category(&self) -> Result<TaskCategory, ServiceError> {
        category_of(self.task_category.as_ref(), "GetTask")
    }

    fn take_run_trace(&mut self) -> Option<TraceId> {
        telemetry::take_from_meta(&mut self.resource_meta)
    }

    fn into_request(self) -> Result<GetRequest, ServiceError> {
        mapping::get_request(self)
    }

    /// A transient failure is UNAVAILABLE, not a terminal phase: Flyte's
    /// executor polls again, where RETRYABLE_FAILED would end the attempt
    /// and launch the job anew while it may still run.
    fn call(
        connector: SharedConnector,
        request: GetRequest,
        deadline: Deadline,
    ) -> Pending<Resource> {
        Box::pin(async move { connector.get(request, deadline).await })
    }

    fn respond(resource: Resource) -> Result<pb::GetTaskResponse, ConvertError> {
        mapping::get_response(resource)
    }

    fn wire_size(response: &pb::GetTaskResponse) -> usize {
        response.encoded_len()
    }
}

impl Rpc for pb::DeleteTaskRequest {
    const OPERATION: Operation = Operation::Delete;
    const RPC_NAME: &'static str = "flyteidl2.connector.AsyncConnectorService/DeleteTask";
    type Request = DeleteRequest;
    type Answer = ();
    type Response = pb::DeleteTaskResponse;

    fn task_type(&self) -> &str {
        task_type_of(self.task_category.as_ref())
    }

    fn category(&self) -> Result<TaskCategory, ServiceError> {
        category_of(self.task_category.as_ref(), "DeleteTask")
    }

    fn take_run_trace(&mut self) -> Option<TraceId> {
        telemetry::take_from_meta(&mut self.resource_meta)
    }

    fn into_request(self) -> Result<DeleteRequest, ServiceError> {
        mapping::delete_request(self)
    }

    fn call(connector: SharedConnector, request: DeleteRequest, deadline: Deadline) -> Pending<()> {
        Box::pin(async move { connector.delete(request, deadline).await })
    }

    fn respond((): ()) -> Result<pb::DeleteTaskResponse, ConvertError> {
        Ok(pb::DeleteTaskResponse {})
    }

    fn wire_size(response: &pb::DeleteTaskResponse) -> usize {
        response.encoded_len()
    }
}

impl Rpc for pb::GetTaskMetricsRequest {
    const OPERATION: Operation = Operation::GetMetrics;
    const RPC_NAME: &'static str = "flyteidl2.connector.AsyncConnectorService/GetTaskMetrics";
    type Request = MetricsRequest;
    type Answer = Vec<MetricResult>;
    type Response = pb::GetTaskMetricsResponse;

    fn task_type(&self) -> &str {
        task_type_of(self.task_category.as_ref())
    }

    fn category(&self) -> Result<TaskCategory, ServiceError> {
        category_of(self.task_category.as_ref(), "GetTaskMetrics")
    }

    fn take_run_trace(&mut self) -> Option<TraceId> {
        telemetry::take_from_meta(&mut self.resource_meta)
    }

    fn into_request(self) -> Result<MetricsRequest, ServiceError> {
        mapping::metrics_request(self)
    }

    fn call(
        connector: SharedConnector,
        request: MetricsRequest,
        deadline: Deadline,
    ) -> Pending<Vec<MetricResult>> {
        Box::pin(async move { connector.get_metrics(request, deadline).await })
    }

    fn respond(results: Vec<MetricResult>) -> Result<pb::GetTaskMetricsResponse, ConvertError> {
        mapping::metrics_response(results)
    }

    fn wire_size(response: &pb::GetTaskMetricsResponse) -> usize {
        response.encoded_len()
    }
}

impl Rpc for pb::GetTaskLogsRequest {
    const OPERATION: Operation = Operation::GetLogs;
    const RPC_NAME: &'static str = "flyteidl2.connector.AsyncConnectorService/GetTaskLogs";
    type Request = LogsRequest;
    type Answer = LogsPage;
    /// The parts the page is streamed as.
    type Response = Vec<pb::GetTaskLogsResponse>;

    fn task_type(&self) -> &str {
        task_type_of(self.task_category.as_ref())
    }

    fn category(&self) -> Result<TaskCategory, ServiceError> {
        category_of(self.task_category.as_ref(), "GetTaskLogs")
    }

    fn take_run_trace(&mut self) -> Option<TraceId> {
        telemetry::take_from_meta(&mut self.resource_meta)
    }

    fn into_request(self) -> Result<LogsRequest, ServiceError> {
        mapping::logs_request(self)
    }

    fn call(
        connector: SharedConnector,
        request: LogsRequest,
        deadline: Deadline,
    ) -> Pending<LogsPage> {
        Box::pin(async move { connector.get_logs(request, deadline).await })
    }

    fn respond(page: LogsPage) -> Result<Vec<pb::GetTaskLogsResponse>, ConvertError> {
        Ok(mapping::logs_response(page))
    }

    /// Each part of a log page is a message of its own on the wire.
    fn wire_size(parts: &Vec<pb::GetTaskLogsResponse>) -> usize {
        parts.iter().map(Message::encoded_len).max().unwrap_or(0)
    }
}
