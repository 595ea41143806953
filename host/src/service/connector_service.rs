//! `flyteidl2.connector.AsyncConnectorService`: create, poll and cancel
//! tasks, and read their metrics and logs.

use std::{pin::Pin, time::Instant};

use prost::Message as _;
use serde_json::{Value, json};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{RegistryView, ServiceError, find_connector};
use crate::{
    connector::{
        ConnectionMap, ConnectorError, CreateRequest, DeleteRequest, GetRequest, LogsRequest,
        MetricsRequest, Phase, Resource, SharedConnector, TaskCategory,
    },
    convert,
    metrics::{Metrics, Operation},
    proto::{connector as pb, core, flyteidl2::logs::dataplane},
};

/// The task service: a thin adapter from gRPC to the registry's connectors.
#[derive(Clone)]
pub struct AsyncConnector {
    registry: RegistryView,
    metrics: Metrics,
}

impl AsyncConnector {
    /// Serves the connectors of `registry`, recording into `metrics`.
    pub fn new(registry: RegistryView, metrics: Metrics) -> Self {
        Self { registry, metrics }
    }

    /// Records the outcome of a create/get/delete and turns it into a response.
    fn finish<T>(
        &self,
        task_type: &str,
        operation: Operation,
        started: Instant,
        result: Result<T, ServiceError>,
    ) -> Result<Response<T>, Status> {
        let elapsed = started.elapsed();
        match result {
            Ok(response) => {
                self.metrics.record_success(task_type, operation, elapsed);
                Ok(Response::new(response))
            }
            Err(error) => {
                self.metrics
                    .record_failure(task_type, operation, error.metrics_code(), elapsed);
                self.note_failure(task_type, operation.label(), &error);
                Err(error.into())
            }
        }
    }

    fn note_failure(&self, task_type: &str, operation: &str, error: &ServiceError) {
        if error.is_guest_crash() {
            self.metrics.guest_crashes.inc();
        }
        tracing::warn!(task_type, operation, code = ?error.code(), "{error}");
    }

    /// The task category a request names and the connector serving it.
    fn resolve(
        &self,
        category: Option<&pb::TaskCategory>,
        rpc: &str,
    ) -> Result<(TaskCategory, SharedConnector), ServiceError> {
        let category = task_category(category, rpc)?;
        let connector = find_connector(&self.registry, &category)?;
        Ok((category, connector))
    }

    async fn create(
        &self,
        request: pb::CreateTaskRequest,
    ) -> Result<pb::CreateTaskResponse, ServiceError> {
        let template = request.template.ok_or_else(|| {
            ServiceError::InvalidArgument("CreateTask request has no task template.".into())
        })?;
        let category = TaskCategory {
            name: template.r#type.clone(),
            version: template.task_type_version,
        };
        let connector = find_connector(&self.registry, &category)?;
        let inputs = convert::inputs_to_json(
            request.inputs.as_ref().unwrap_or(&Default::default()),
            template.interface.as_ref(),
        )
        .map_err(ServiceError::InvalidInput)?;
        let template_json =
            convert::message_to_json(&template, "template").map_err(ServiceError::InvalidInput)?;
        let task_execution_metadata = match &request.task_execution_metadata {
            Some(metadata) => convert::message_to_json(metadata, "task_execution_metadata")
                .map_err(ServiceError::InvalidInput)?,
            None => json!({}),
        };
        let resource_meta = connector
            .create(CreateRequest {
                inputs: inputs.values,
                input_types: inputs.types,
                template: template_json,
                output_prefix: request.output_prefix,
                task_execution_metadata,
                connection: merge_connection(request.connection.as_ref()),
            })
            .await
            .map_err(connector_failed("create", &category.name))?;
        Ok(pb::CreateTaskResponse { resource_meta })
    }

    async fn get(&self, request: pb::GetTaskRequest) -> Result<pb::GetTaskResponse, ServiceError> {
        let (category, connector) = self.resolve(request.task_category.as_ref(), "GetTask")?;
        let resource = connector
            .get(GetRequest {
                task_category: category.clone(),
                resource_meta: request.resource_meta,
                output_prefix: request.output_prefix,
                connection: merge_connection(request.connection.as_ref()),
            })
            .await
            .map_err(connector_failed("get", &category.name))?;
        let resource =
            resource_to_proto(resource).map_err(|error| ServiceError::InvalidOutput {
                operation: "get",
                task_type: category.name,
                error,
            })?;
        Ok(pb::GetTaskResponse {
            resource: Some(resource),
        })
    }

    async fn delete(
        &self,
        request: pb::DeleteTaskRequest,
    ) -> Result<pb::DeleteTaskResponse, ServiceError> {
        let (category, connector) = self.resolve(request.task_category.as_ref(), "DeleteTask")?;
        connector
            .delete(DeleteRequest {
                task_category: category.clone(),
                resource_meta: request.resource_meta,
                connection: merge_connection(request.connection.as_ref()),
            })
            .await
            .map_err(connector_failed("delete", &category.name))?;
        Ok(pb::DeleteTaskResponse {})
    }

    async fn metrics_of(
        &self,
        request: pb::GetTaskMetricsRequest,
    ) -> Result<pb::GetTaskMetricsResponse, ServiceError> {
        let (category, connector) =
            self.resolve(request.task_category.as_ref(), "GetTaskMetrics")?;
        let as_text = |value: Option<Value>| value.and_then(|v| v.as_str().map(str::to_owned));
        let results = connector
            .get_metrics(MetricsRequest {
                task_category: category.clone(),
                resource_meta: request.resource_meta,
                queries: request.queries,
                start_time: as_text(
                    request
                        .start_time
                        .and_then(|t| serde_json::to_value(t).ok()),
                ),
                end_time: as_text(request.end_time.and_then(|t| serde_json::to_value(t).ok())),
                step: as_text(request.step.and_then(|d| serde_json::to_value(d).ok())),
            })
            .await
            .map_err(connector_failed("get metrics for", &category.name))?;
        let results = results
            .into_iter()
            .map(|result| {
                Ok(core::ExecutionMetricResult {
                    metric: result.metric,
                    data: Some(convert::struct_from_json(&result.data)?),
                })
            })
            .collect::<Result<_, convert::ConvertError>>()
            .map_err(|error| ServiceError::InvalidOutput {
                operation: "get metrics for",
                task_type: category.name,
                error,
            })?;
        Ok(pb::GetTaskMetricsResponse { results })
    }

    async fn logs_of(
        &self,
        request: pb::GetTaskLogsRequest,
    ) -> Result<Vec<pb::GetTaskLogsResponse>, ServiceError> {
        let (category, connector) = self.resolve(request.task_category.as_ref(), "GetTaskLogs")?;
        let page = connector
            .get_logs(LogsRequest {
                task_category: category.clone(),
                resource_meta: request.resource_meta,
                lines: request.lines,
                token: request.token,
            })
            .await
            .map_err(connector_failed("get logs for", &category.name))?;
        let header = pb::GetTaskLogsResponse {
            part: Some(pb::get_task_logs_response::Part::Header(
                pb::GetTaskLogsResponseHeader {
                    token: page.next_token,
                },
            )),
        };
        let lines = page
            .lines
            .iter()
            .map(|line| dataplane::LogLine {
                message: line.clone(),
                originator: dataplane::LogLineOriginator::User as i32,
                ..Default::default()
            })
            .collect();
        // `results` is deprecated in favour of `lines`; older clients read only it.
        #[allow(deprecated)]
        let body = pb::GetTaskLogsResponse {
            part: Some(pb::get_task_logs_response::Part::Body(
                pb::GetTaskLogsResponseBody {
                    results: page.lines,
                    lines,
                },
            )),
        };
        Ok(vec![header, body])
    }
}

/// Turns a connector's error into the service error for `operation` on `task_type`.
fn connector_failed(
    operation: &'static str,
    task_type: &str,
) -> impl FnOnce(ConnectorError) -> ServiceError {
    let task_type = task_type.to_owned();
    move |error| ServiceError::Connector {
        operation,
        task_type,
        error,
    }
}

/// The task type name a request names, for metrics and logs ("" when absent).
fn category_name(category: Option<&pb::TaskCategory>) -> String {
    category.map(|c| c.name.clone()).unwrap_or_default()
}

/// The task category of a get/delete/metrics/logs request.
fn task_category(
    category: Option<&pb::TaskCategory>,
    rpc: &str,
) -> Result<TaskCategory, ServiceError> {
    let category = category.ok_or_else(|| {
        ServiceError::InvalidArgument(format!("{rpc} request has no task_category."))
    })?;
    Ok(TaskCategory {
        name: category.name.clone(),
        version: category.version,
    })
}

/// Secrets, then configs (configs win on a clash), as the Python server merges them.
fn merge_connection(connection: Option<&core::Connection>) -> ConnectionMap {
    let mut merged = ConnectionMap::new();
    if let Some(connection) = connection {
        merged.extend(
            connection
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        merged.extend(
            connection
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    merged
}

fn phase_to_proto(phase: Phase) -> core::task_execution::Phase {
    use core::task_execution::Phase as Pb;
    match phase {
        Phase::Undefined => Pb::Undefined,
        Phase::Queued => Pb::Queued,
        Phase::Running => Pb::Running,
        Phase::Succeeded => Pb::Succeeded,
        Phase::Aborted => Pb::Aborted,
        Phase::Failed => Pb::Failed,
        Phase::Initializing => Pb::Initializing,
        Phase::WaitingForResources => Pb::WaitingForResources,
        Phase::RetryableFailed => Pb::RetryableFailed,
    }
}

fn resource_to_proto(resource: Resource) -> Result<pb::Resource, convert::ConvertError> {
    // Like the Python server: no outputs and empty outputs both leave the field unset.
    let outputs = match resource.outputs {
        Some(outputs) if !outputs.is_empty() => Some(convert::outputs_to_proto(&outputs)?),
        _ => None,
    };
    let custom_info = resource
        .custom_info
        .as_ref()
        .map(convert::struct_from_json)
        .transpose()?;
    Ok(pb::Resource {
        outputs,
        message: resource.message,
        log_links: resource
            .log_links
            .into_iter()
            .map(|link| core::TaskLog {
                uri: link.uri,
                name: link.name,
                ready: link.ready,
                icon_uri: link.icon_uri,
                show_while_pending: link.show_while_pending,
                hide_once_finished: link.hide_once_finished,
                ..Default::default()
            })
            .collect(),
        phase: phase_to_proto(resource.phase) as i32,
        custom_info,
    })
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::GetTaskLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::async_connector_service_server::AsyncConnectorService for AsyncConnector {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let task_type = request
            .template
            .as_ref()
            .map(|t| t.r#type.clone())
            .unwrap_or_default();
        let input_bytes = request
            .inputs
            .as_ref()
            .map_or(0, |inputs| inputs.encoded_len());
        self.metrics.record_input_bytes(&task_type, input_bytes);
        let result = self.create(request).await;
        self.finish(&task_type, Operation::Create, started, result)
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let task_type = category_name(request.task_category.as_ref());
        let result = self.get(request).await;
        self.finish(&task_type, Operation::Get, started, result)
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let task_type = category_name(request.task_category.as_ref());
        let result = self.delete(request).await;
        self.finish(&task_type, Operation::Delete, started, result)
    }

    async fn get_task_metrics(
        &self,
        request: Request<pb::GetTaskMetricsRequest>,
    ) -> Result<Response<pb::GetTaskMetricsResponse>, Status> {
        let request = request.into_inner();
        let task_type = category_name(request.task_category.as_ref());
        self.metrics_of(request)
            .await
            .map(Response::new)
            .map_err(|error| {
                self.note_failure(&task_type, "get_metrics", &error);
                error.into()
            })
    }

    type GetTaskLogsStream = LogStream;

    async fn get_task_logs(
        &self,
        request: Request<pb::GetTaskLogsRequest>,
    ) -> Result<Response<Self::GetTaskLogsStream>, Status> {
        let request = request.into_inner();
        let task_type = category_name(request.task_category.as_ref());
        match self.logs_of(request).await {
            Ok(parts) => {
                let stream: LogStream = Box::pin(tokio_stream::iter(parts.into_iter().map(Ok)));
                Ok(Response::new(stream))
            }
            Err(error) => {
                self.note_failure(&task_type, "get_logs", &error);
                Err(error.into())
            }
        }
    }
}
