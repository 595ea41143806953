//! `flyteidl2.connector.AsyncConnectorService`: create, poll and cancel
//! tasks, and read their metrics and logs. A thin adapter: [`mapping`]
//! turns messages into connector requests and answers back, the registry
//! picks the connector, and [`ServiceError`] turns failures into statuses.

use std::{future::Future, pin::Pin, time::Instant};

use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{RegistryView, ServiceError, find_connector, mapping};
use crate::{
    connector::{ConnectorError, Operation, SharedConnector, TaskCategory},
    metrics::Metrics,
    proto::connector as pb,
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
}

impl AsyncConnector {
    /// Serves the connectors of `registry`, recording into `metrics`; a
    /// response larger than `max_response_bytes` fails its call.
    pub fn new(registry: RegistryView, metrics: Metrics, max_response_bytes: usize) -> Self {
        Self {
            registry,
            metrics,
            max_response_bytes,
        }
    }

    /// The `task_type` label of the request metrics: the task type when a
    /// connector serves it, else one label shared by every unknown one.
    fn metric_label<'a>(&self, task_type: &'a str) -> &'a str {
        if self.registry.borrow().serves_task_type(task_type) {
            task_type
        } else {
            UNKNOWN_TASK_TYPE_LABEL
        }
    }

    /// Runs one RPC: times it, records the request metrics (for create, get
    /// and delete, as the Python server), logs a failure once, and turns it
    /// into a status.
    async fn serve<T>(
        &self,
        operation: Operation,
        task_type: &str,
        wire_size: fn(&T) -> usize,
        rpc: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<Response<T>, Status> {
        self.serve_labelled(
            operation,
            task_type,
            self.metric_label(task_type),
            wire_size,
            rpc,
        )
        .await
    }

    /// [`Self::serve`] with the metrics label already resolved.
    async fn serve_labelled<T>(
        &self,
        operation: Operation,
        task_type: &str,
        label: &str,
        wire_size: fn(&T) -> usize,
        rpc: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = rpc.await.and_then(|response| {
            self.check_size(operation, task_type, wire_size(&response), response)
        });
        let elapsed = started.elapsed();
        let recorded = operation.has_request_metrics();
        match result {
            Ok(response) => {
                if recorded {
                    self.metrics.record_success(label, operation, elapsed);
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
                tracing::warn!(
                    task_type,
                    operation = operation.label(),
                    code = ?error.code(),
                    "{error}"
                );
                Err(error.into())
            }
        }
    }

    /// Fails a response larger than the server's maximum message size,
    /// which the client could not receive (or should not have to).
    fn check_size<T>(
        &self,
        operation: Operation,
        task_type: &str,
        size: usize,
        response: T,
    ) -> Result<T, ServiceError> {
        if size > self.max_response_bytes {
            return Err(ServiceError::Connector {
                operation,
                task_type: task_type.to_owned(),
                error: ConnectorError::TooLarge {
                    what: "a response",
                    size,
                    limit: self.max_response_bytes,
                },
            });
        }
        Ok(response)
    }

    fn connector(&self, category: &TaskCategory) -> Result<SharedConnector, ServiceError> {
        find_connector(&self.registry, category)
    }
}

/// Attaches the operation and task type to a connector's failure.
fn failed(
    operation: Operation,
    category: &TaskCategory,
) -> impl FnOnce(ConnectorError) -> ServiceError {
    let task_type = category.name.clone();
    move |error| ServiceError::Connector {
        operation,
        task_type,
        error,
    }
}

/// Attaches the operation and task type to an answer that cannot be converted.
fn unconvertible(
    operation: Operation,
    category: &TaskCategory,
) -> impl FnOnce(crate::convert::ConvertError) -> ServiceError {
    let task_type = category.name.clone();
    move |error| ServiceError::InvalidOutput {
        operation,
        task_type,
        error,
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::GetTaskLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::async_connector_service_server::AsyncConnectorService for AsyncConnector {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let deadline = mapping::deadline(request.metadata());
        let request = request.into_inner();
        let task_type = request
            .template
            .as_ref()
            .map(|t| t.r#type.clone())
            .unwrap_or_default();
        let input_bytes = request.inputs.as_ref().map_or(0, Message::encoded_len);
        let label = self.metric_label(&task_type);
        self.metrics.record_input_bytes(label, input_bytes);
        let operation = Operation::Create;
        self.serve_labelled(operation, &task_type, label, Message::encoded_len, async {
            // The connector first: an unknown task type is NOT_FOUND,
            // whatever its inputs, as the Python server answers.
            let category = mapping::create_category(&request)?;
            let connector = self.connector(&category)?;
            let request = mapping::create_request(request)?;
            let resource_meta = connector
                .create(request, deadline)
                .await
                .map_err(failed(operation, &category))?;
            Ok(pb::CreateTaskResponse { resource_meta })
        })
        .await
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let deadline = mapping::deadline(request.metadata());
        let request = request.into_inner();
        let task_type = mapping::category_name(request.task_category.as_ref());
        let operation = Operation::Get;
        self.serve(operation, &task_type, Message::encoded_len, async {
            let request = mapping::get_request(request)?;
            let category = request.task_category.clone();
            // A transient failure is UNAVAILABLE, not a terminal phase:
            // Flyte's executor polls again, where RETRYABLE_FAILED would end
            // the attempt and launch the job anew while it may still run.
            let resource = self
                .connector(&category)?
                .get(request, deadline)
                .await
                .map_err(failed(operation, &category))?;
            mapping::get_response(resource).map_err(unconvertible(operation, &category))
        })
        .await
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let deadline = mapping::deadline(request.metadata());
        let request = request.into_inner();
        let task_type = mapping::category_name(request.task_category.as_ref());
        let operation = Operation::Delete;
        self.serve(operation, &task_type, Message::encoded_len, async {
            let request = mapping::delete_request(request)?;
            let category = request.task_category.clone();
            self.connector(&category)?
                .delete(request, deadline)
                .await
                .map_err(failed(operation, &category))?;
            Ok(pb::DeleteTaskResponse {})
        })
        .await
    }

    async fn get_task_metrics(
        &self,
        request: Request<pb::GetTaskMetricsRequest>,
    ) -> Result<Response<pb::GetTaskMetricsResponse>, Status> {
        let deadline = mapping::deadline(request.metadata());
        let request = request.into_inner();
        let task_type = mapping::category_name(request.task_category.as_ref());
        let operation = Operation::GetMetrics;
        self.serve(operation, &task_type, Message::encoded_len, async {
            let request = mapping::metrics_request(request)?;
            let category = request.task_category.clone();
            let results = self
                .connector(&category)?
                .get_metrics(request, deadline)
                .await
                .map_err(failed(operation, &category))?;
            mapping::metrics_response(results).map_err(unconvertible(operation, &category))
        })
        .await
    }

    type GetTaskLogsStream = LogStream;

    async fn get_task_logs(
        &self,
        request: Request<pb::GetTaskLogsRequest>,
    ) -> Result<Response<Self::GetTaskLogsStream>, Status> {
        let deadline = mapping::deadline(request.metadata());
        let request = request.into_inner();
        let task_type = mapping::category_name(request.task_category.as_ref());
        let operation = Operation::GetLogs;
        let page = self
            .serve(operation, &task_type, largest_part, async {
                let request = mapping::logs_request(request)?;
                let category = request.task_category.clone();
                let page = self
                    .connector(&category)?
                    .get_logs(request, deadline)
                    .await
                    .map_err(failed(operation, &category))?;
                Ok(mapping::logs_response(page))
            })
            .await?
            .into_inner();
        let stream: LogStream = Box::pin(tokio_stream::iter(page.into_iter().map(Ok)));
        Ok(Response::new(stream))
    }
}

/// Each part of a log page is a message of its own on the wire.
#[allow(clippy::ptr_arg, reason = "it sizes the `Vec` the RPC answers with")]
fn largest_part(parts: &Vec<pb::GetTaskLogsResponse>) -> usize {
    parts.iter().map(Message::encoded_len).max().unwrap_or(0)
}
