//! Between protobuf messages and the host's [`crate::connector`] types: the
//! requests the services receive become connector requests, and what
//! connectors answer becomes responses. Literal values go through
//! [`crate::convert`].

use std::time::Duration;

use serde_json::json;
use tonic::metadata::MetadataMap;

use super::ServiceError;
use crate::{
    connector::{
        ConnectionMap, CreateRequest, Deadline, DeleteRequest, GetRequest, LinkType, LogsPage,
        LogsRequest, MetricResult, MetricsRequest, Phase, Resource, TaskCategory,
    },
    convert::{self, ConvertError},
    proto::{connector as pb, core, flyteidl2::logs::dataplane, task},
};

/// The task category of a get/delete/metrics/logs request.
pub(crate) fn task_category(
    category: Option<pb::TaskCategory>,
    rpc: &str,
) -> Result<TaskCategory, ServiceError> {
    let category = category.ok_or_else(|| {
        ServiceError::InvalidArgument(format!("{rpc} request has no task_category."))
    })?;
    Ok(TaskCategory {
        name: category.name,
        version: category.version,
    })
}

fn no_template() -> ServiceError {
    ServiceError::InvalidArgument("CreateTask request has no task template.".into())
}

/// The task category a CreateTask request's template names.
pub(crate) fn create_category(
    request: &pb::CreateTaskRequest,
) -> Result<TaskCategory, ServiceError> {
    request
        .template
        .as_ref()
        .map(template_category)
        .ok_or_else(no_template)
}

/// The task category `template` names.
pub(crate) fn template_category(template: &core::TaskTemplate) -> TaskCategory {
    TaskCategory {
        name: template.r#type.clone(),
        version: template.task_type_version,
    }
}

/// The connector request of a CreateTask request, its inputs converted to JSON.
pub(crate) fn create_request(
    request: pb::CreateTaskRequest,
) -> Result<CreateRequest, ServiceError> {
    let template = request.template.ok_or_else(no_template)?;
    let task_execution_metadata = match &request.task_execution_metadata {
        Some(metadata) => convert::message_to_json(metadata, "task_execution_metadata")
            .map_err(ServiceError::InvalidInput)?,
        None => json!({}),
    };
    task_request(
        &template,
        request.inputs.as_ref().unwrap_or(&Default::default()),
        request.output_prefix,
        task_execution_metadata,
        merge_connection(request.connection.as_ref()),
    )
    .map_err(ServiceError::InvalidInput)
}

/// The connector request that starts a task of `template` with `inputs`,
/// both converted to JSON as a connector sees them.
pub(crate) fn task_request(
    template: &core::TaskTemplate,
    inputs: &task::Inputs,
    output_prefix: String,
    task_execution_metadata: serde_json::Value,
    connection: ConnectionMap,
) -> Result<CreateRequest, ConvertError> {
    let inputs = convert::inputs_to_json(inputs, template.interface.as_ref())?;
    Ok(CreateRequest {
        inputs: inputs.values,
        input_types: inputs.types,
        template: convert::message_to_json(template, "template")?,
        output_prefix,
        task_execution_metadata,
        connection,
    })
}

pub(crate) fn get_request(request: pb::GetTaskRequest) -> Result<GetRequest, ServiceError> {
    Ok(GetRequest {
        task_category: task_category(request.task_category, "GetTask")?,
        resource_meta: request.resource_meta,
        output_prefix: request.output_prefix,
        connection: merge_connection(request.connection.as_ref()),
    })
}

pub(crate) fn delete_request(
    request: pb::DeleteTaskRequest,
) -> Result<DeleteRequest, ServiceError> {
    Ok(DeleteRequest {
        task_category: task_category(request.task_category, "DeleteTask")?,
        resource_meta: request.resource_meta,
        connection: merge_connection(request.connection.as_ref()),
    })
}

pub(crate) fn metrics_request(
    request: pb::GetTaskMetricsRequest,
) -> Result<MetricsRequest, ServiceError> {
    // Timestamps and durations as their proto3 JSON strings ("60s").
    fn as_text<T: serde::Serialize>(value: Option<T>) -> Option<String> {
        let value = serde_json::to_value(value?).ok()?;
        value.as_str().map(str::to_owned)
    }
    Ok(MetricsRequest {
        task_category: task_category(request.task_category, "GetTaskMetrics")?,
        resource_meta: request.resource_meta,
        queries: request.queries,
        start_time: as_text(request.start_time),
        end_time: as_text(request.end_time),
        step: as_text(request.step),
        connection: ConnectionMap::new(),
    })
}

pub(crate) fn logs_request(request: pb::GetTaskLogsRequest) -> Result<LogsRequest, ServiceError> {
    Ok(LogsRequest {
        task_category: task_category(request.task_category, "GetTaskLogs")?,
        resource_meta: request.resource_meta,
        lines: request.lines,
        token: request.token,
        connection: ConnectionMap::new(),
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

/// A phase as the protobuf enum (whose `as_str_name` is its flyteidl2 name).
pub(crate) fn phase_to_proto(phase: Phase) -> core::task_execution::Phase {
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

fn link_type_to_proto(link_type: LinkType) -> core::task_log::LinkType {
    use core::task_log::LinkType as Pb;
    match link_type {
        LinkType::External => Pb::External,
        LinkType::Dashboard => Pb::Dashboard,
        LinkType::Ide => Pb::Ide,
    }
}

/// GetTask's answer: outputs converted to literals, custom_info to a Struct.
pub(crate) fn get_response(resource: Resource) -> Result<pb::GetTaskResponse, ConvertError> {
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
    Ok(pb::GetTaskResponse {
        resource: Some(pb::Resource {
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
                    link_type: link_type_to_proto(link.link_type) as i32,
                    ..Default::default()
                })
                .collect(),
            phase: phase_to_proto(resource.phase) as i32,
            custom_info,
        }),
    })
}

pub(crate) fn metrics_response(
    results: Vec<MetricResult>,
) -> Result<pb::GetTaskMetricsResponse, ConvertError> {
    let results = results
        .into_iter()
        .map(|result| {
            Ok(core::ExecutionMetricResult {
                metric: result.metric,
                data: Some(convert::struct_from_json(&result.data)?),
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(pb::GetTaskMetricsResponse { results })
}

/// GetTaskLogs' answer: a header with the next page's token, then the lines.
pub(crate) fn logs_response(page: LogsPage) -> Vec<pb::GetTaskLogsResponse> {
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
    vec![header, body]
}

/// The most a call may wait for a slot is cut this much short of the
/// client's deadline (at most [`MAX_DEADLINE_MARGIN`]), so our answer is on
/// the wire while the client still listens, and before tonic's own timer
/// cancels the call with a vaguer status.
const DEADLINE_MARGIN_FRACTION: u32 = 20;
const MAX_DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// The client's deadline, from the `grpc-timeout` header.
pub(crate) fn deadline(metadata: &MetadataMap) -> Deadline {
    let Some(timeout) = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
    else {
        return Deadline::NONE;
    };
    let margin = (timeout / DEADLINE_MARGIN_FRACTION).min(MAX_DEADLINE_MARGIN);
    Deadline::after(timeout.saturating_sub(margin))
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(value.checked_mul(3600)?),
        'M' => Duration::from_secs(value.checked_mul(60)?),
        'S' => Duration::from_secs(value),
        'm' => Duration::from_millis(value),
        'u' => Duration::from_micros(value),
        'n' => Duration::from_nanos(value),
        _ => return None,
    })
}

/// The JSON value of a protobuf message, for tests.
#[cfg(test)]
fn to_json<M: serde::Serialize>(message: &M) -> serde_json::Value {
    serde_json::to_value(message).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn secrets_and_configs_merge_with_configs_winning() {
        let connection = core::Connection {
            secrets: [
                ("token".to_owned(), "s".to_owned()),
                ("a".to_owned(), "1".to_owned()),
            ]
            .into(),
            configs: [("token".to_owned(), "c".to_owned())].into(),
            ..Default::default()
        };
        let merged = merge_connection(Some(&connection));
        assert_eq!(merged.get("token").map(String::as_str), Some("c"));
        assert_eq!(merged.get("a").map(String::as_str), Some("1"));
    }

    #[test]
    fn logs_come_as_a_header_then_the_lines() {
        let parts = logs_response(LogsPage {
            lines: vec!["one".into()],
            next_token: "next".into(),
        });
        assert_eq!(parts.len(), 2);
        assert_eq!(to_json(&parts[0])["header"]["token"], "next");
        assert_eq!(to_json(&parts[1])["body"]["lines"][0]["message"], "one");
    }
}
