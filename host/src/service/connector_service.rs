//! `flyteidl2.connector.AsyncConnectorService`: create, poll and cancel
//! tasks, and read their metrics and logs. A thin adapter: every RPC goes
//! through [`AsyncConnector::serve`], which decodes it ([`Rpc`]), finds its
//! connector and metrics label in one snapshot of the registry, calls it,
//! records the metrics, and turns a failure into a status
//! ([`ServiceError`]).

use std::{pin::Pin, sync::Arc, time::Instant};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{RegistryView, ServiceError, log_limit::LogLimiter, mapping, rpc::Rpc};
use crate::{
    connector::{ConnectorError, Deadline},
    metrics::Metrics,
    proto::connector as pb,
    registry::Registry,
    telemetry,
};

/// The `task_type` label of requests for a task type no connector serves:
/// a client sending ever new task types must not grow the metrics.
pub const UNKNOWN_TASK_TYPE_LABEL: &str = "_unknown";

/// The task service.
#[derive(Clone)]
pub struct AsyncConnector {
    registry: RegistryView,
    metrics: Metrics,
    max_response_bytes: usize,
    logged: Arc<LogLimiter>,
}

impl AsyncConnector {
    /// Serves the connectors of `registry`, recording into `metrics`; a
    /// response larger than `max_response_bytes` fails its call.
    pub fn new(registry: RegistryView, metrics: Metrics, max_response_bytes: usize) -> Self {
        Self {
            registry,
            metrics,
            max_response_bytes,
            logged: Arc::default(),
        }
    }

    /// Runs one RPC: finds its connector in one snapshot of the registry
    /// (which also decides its metrics label), decodes the message and calls
    /// the connector, times it, records the request metrics (for create, get
    /// and delete, as the Python server), logs a failure (at most once per
    /// interval per cause: [`LogLimiter`]), and turns it into a status.
    /// Everything logged on the way is in an `rpc` span naming the task
    /// type and the operation; with traces on, that span is the call's in
    /// its trace (see [`telemetry`]), and a created task's meta carries the
    /// trace for its later calls.
    async fn serve<R: Rpc>(&self, request: Request<R>) -> Result<Response<R::Response>, Status> {
        let started = Instant::now();
        let deadline = mapping::deadline(request.metadata());
        let remote_parent = telemetry::remote_parent(request.metadata());
        let mut message = request.into_inner();
        // Taken off the resource meta whether or not traces are on: a
        // connector never sees it.
        let run_trace = message.take_run_trace();
        let registry = self.registry.borrow().clone();
        let task_type = message.task_type().to_owned();
        let label = metric_label(&registry, &task_type);
        if let Some(bytes) = message.input_bytes() {
            self.metrics.record_input_bytes(label, bytes);
        }
        let operation = R::OPERATION;
        let span = tracing::info_span!(
            "rpc",
            task_type = %task_type,
            operation = operation.label(),
            trace_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if telemetry::enabled() {
            // Named before it starts: a started span keeps its name.
            span.record("otel.name", R::RPC_NAME);
            span.record("otel.kind", "server");
        }
        telemetry::begin_rpc(&span, remote_parent, run_trace);
        let trace_id = telemetry::trace_id_of(&span);
        if let Some(trace_id) = trace_id {
            span.record("trace_id", tracing::field::display(trace_id));
        }
        let result = self
            .answer(&registry, message, deadline)
            .instrument(span.clone())
            .await;
        let elapsed = started.elapsed();
        let recorded = operation.has_request_metrics();
        match result {
            Ok(mut response) => {
                if recorded {
                    self.metrics.record_success(label, operation, elapsed);
                }
                if let Some(trace_id) = trace_id {
                    span.record("outcome", "ok");
                    span.record("rpc.grpc.status_code", 0_i64);
                    R::carry_trace(&mut response, trace_id);
                }
                Ok(Response::new(response))
            }
            Err(error) => {
                if recorded {
                    self.metrics
                        .record_failure(label, operation, error.metrics_code(), elapsed);
                }
                if error.is_guest_crash() {
                    self.metrics.guest_crashes.inc();
                }
                if trace_id.is_some() {
                    span.record("outcome", "error");
                    span.record("rpc.grpc.status_code", error.code() as i64);
                    span.record("otel.status_code", "ERROR");
                }
                let cause = (operation.label(), label.to_owned(), error.code());
                if let Some(repeated) = self.logged.admit(cause) {
                    span.in_scope(|| {
                        tracing::warn!(code = ?error.code(), repeated, "{error}");
                    });
                }
                Err(error.into())
            }
        }
    }

    /// The response to `message`, from its connector in `registry`.
    async fn answer<R: Rpc>(
        &self,
        registry: &Registry,
        message: R,
        deadline: Deadline,
    ) -> Result<R::Response, ServiceError> {
        // The connector first: an unknown task type is NOT_FOUND, whatever
        // its inputs, as the Python server answers.
        let category = message.category()?;
        let connector = registry
            .get(&category)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(category.name.clone()))?;
        let request = message.into_request()?;
        let failed = |cause| ServiceError::Failed {
            operation: R::OPERATION,
            task_type: category.name.clone(),
            cause,
        };
        let answer = R::call(connector, request, deadline)
            .await
            .map_err(|error| failed(error.into()))?;
        let response = R::respond(answer).map_err(|error| failed(error.into()))?;
        let size = R::wire_size(&response);
        if size > self.max_response_bytes {
            // A response larger than the client could receive (or should
            // have to) fails its call.
            return Err(failed(
                ConnectorError::TooLarge {
                    what: "a response",
                    size,
                    limit: self.max_response_bytes,
                }
                .into(),
            ));
        }
        Ok(response)
    }
}

/// The `task_type` label of the request metrics: the task type when a
/// connector of `registry` serves it, else one label shared by every
/// unknown one.
fn metric_label<'a>(registry: &Registry, task_type: &'a str) -> &'a str {
    if registry.serves_task_type(task_type) {
        task_type
    } else {
        UNKNOWN_TASK_TYPE_LABEL
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::GetTaskLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::async_connector_service_server::AsyncConnectorService for AsyncConnector {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        self.serve(request).await
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        self.serve(request).await
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        self.serve(request).await
    }

    async fn get_task_metrics(
        &self,
        request: Request<pb::GetTaskMetricsRequest>,
    ) -> Result<Response<pb::GetTaskMetricsResponse>, Status> {
        self.serve(request).await
    }

    type GetTaskLogsStream = LogStream;

    async fn get_task_logs(
        &self,
        request: Request<pb::GetTaskLogsRequest>,
    ) -> Result<Response<Self::GetTaskLogsStream>, Status> {
        let parts = self.serve(request).await?.into_inner();
        let stream: LogStream = Box::pin(tokio_stream::iter(parts.into_iter().map(Ok)));
        Ok(Response::new(stream))
    }
}
