//! Native connectors: a connector written with the Rust SDK, compiled for
//! the host and served in process through the host's
//! [`flyte_connect::connector::Connector`] trait. Requests and answers take
//! the same shape as at a component's boundary (JSON text, the SDK's glue on
//! the guest side), so it measures the design without WebAssembly.

use std::{marker::PhantomData, sync::Arc};

use async_trait::async_trait;
use flyte_connect::connector::{
    Connector, ConnectorError, ConnectorInfo, CreateRequest, Deadline, DeleteRequest, GetRequest,
    LinkType, LogsPage, LogsRequest, MetricResult, MetricsRequest, Output, Phase, Resource,
    TaskCategory, TaskLog,
};
use flyte_connector_sdk::__private::{
    Adapter,
    bindings::{exports::flyte::connector::connector::Guest, flyte::connector::types as wit},
};
use serde_json::Value;

/// SDK connector `C` as an in-process host connector.
pub struct NativeConnector<C> {
    info: ConnectorInfo,
    connector: PhantomData<fn() -> C>,
}

impl<C: flyte_connector_sdk::Connector + 'static> NativeConnector<C> {
    /// The connector, asked for its metadata as the host asks a component.
    pub fn shared() -> Arc<Self> {
        let metadata = <Adapter<C> as Guest>::metadata();
        Arc::new(Self {
            info: ConnectorInfo {
                name: metadata.name,
                task_categories: metadata
                    .task_categories
                    .into_iter()
                    .map(|c| TaskCategory {
                        name: c.name,
                        version: c.version,
                    })
                    .collect(),
            },
            connector: PhantomData,
        })
    }
}

fn category(category: TaskCategory) -> wit::TaskCategory {
    wit::TaskCategory {
        name: category.name,
        version: category.version,
    }
}

fn error(error: wit::Error) -> ConnectorError {
    match error {
        wit::Error::Failed(message) => ConnectorError::Failed(message),
        wit::Error::InvalidRequest(message) => ConnectorError::InvalidRequest(message),
        wit::Error::NotImplemented => ConnectorError::NotImplemented,
        wit::Error::Retryable(message) => ConnectorError::Retryable(message),
    }
}

fn json(text: &str) -> Result<Value, ConnectorError> {
    serde_json::from_str(text).map_err(|e| ConnectorError::Failed(format!("invalid JSON: {e}")))
}

fn object(text: &str) -> Result<serde_json::Map<String, Value>, ConnectorError> {
    match json(text)? {
        Value::Object(map) => Ok(map),
        other => Err(ConnectorError::Failed(format!(
            "not a JSON object: {other}"
        ))),
    }
}

fn phase(phase: wit::Phase) -> Phase {
    match phase {
        wit::Phase::Undefined => Phase::Undefined,
        wit::Phase::Queued => Phase::Queued,
        wit::Phase::Running => Phase::Running,
        wit::Phase::Succeeded => Phase::Succeeded,
        wit::Phase::Aborted => Phase::Aborted,
        wit::Phase::Failed => Phase::Failed,
        wit::Phase::Initializing => Phase::Initializing,
        wit::Phase::WaitingForResources => Phase::WaitingForResources,
        wit::Phase::RetryableFailed => Phase::RetryableFailed,
    }
}

fn resource(resource: wit::Resource) -> Result<Resource, ConnectorError> {
    let outputs = match resource.outputs {
        Some(outputs) => Some(
            outputs
                .into_iter()
                .map(|o| {
                    Ok(Output {
                        value: json(&o.value)?,
                        literal_type: o.literal_type.as_deref().map(json).transpose()?,
                        name: o.name,
                    })
                })
                .collect::<Result<_, ConnectorError>>()?,
        ),
        None => None,
    };
    Ok(Resource {
        phase: phase(resource.phase),
        message: resource.message,
        log_links: resource
            .log_links
            .into_iter()
            .map(|l| TaskLog {
                name: l.name,
                uri: l.uri,
                ready: l.ready,
                icon_uri: l.icon_uri,
                show_while_pending: l.show_while_pending,
                hide_once_finished: l.hide_once_finished,
                link_type: match l.link_type {
                    wit::LinkType::External => LinkType::External,
                    wit::LinkType::Dashboard => LinkType::Dashboard,
                    wit::LinkType::Ide => LinkType::Ide,
                },
            })
            .collect(),
        outputs,
        custom_info: resource.custom_info.as_deref().map(object).transpose()?,
    })
}

#[async_trait]
impl<C: flyte_connector_sdk::Connector + 'static> Connector for NativeConnector<C> {
    fn info(&self) -> &ConnectorInfo {
        &self.info
    }

    fn source(&self) -> &str {
        std::any::type_name::<C>()
    }

    async fn create(&self, r: CreateRequest, _: Deadline) -> Result<Vec<u8>, ConnectorError> {
        <Adapter<C> as Guest>::create(wit::CreateRequest {
            inputs: Value::Object(r.inputs).to_string(),
            input_types: Value::Object(r.input_types).to_string(),
            template: r.template.to_string(),
            output_prefix: r.output_prefix,
            task_execution_metadata: r.task_execution_metadata.to_string(),
            connection: r.connection.into_iter().collect(),
        })
        .map_err(error)
    }

    async fn get(&self, r: GetRequest, _: Deadline) -> Result<Resource, ConnectorError> {
        let answer = <Adapter<C> as Guest>::get(wit::GetRequest {
            task_category: category(r.task_category),
            resource_meta: r.resource_meta,
            output_prefix: r.output_prefix,
            connection: r.connection.into_iter().collect(),
        });
        resource(answer.map_err(error)?)
    }

    async fn delete(&self, r: DeleteRequest, _: Deadline) -> Result<(), ConnectorError> {
        <Adapter<C> as Guest>::delete(wit::DeleteRequest {
            task_category: category(r.task_category),
            resource_meta: r.resource_meta,
            connection: r.connection.into_iter().collect(),
        })
        .map_err(error)
    }

    async fn get_metrics(
        &self,
        r: MetricsRequest,
        _: Deadline,
    ) -> Result<Vec<MetricResult>, ConnectorError> {
        let results = <Adapter<C> as Guest>::get_metrics(wit::MetricsRequest {
            task_category: category(r.task_category),
            resource_meta: r.resource_meta,
            queries: r.queries,
            start_time: r.start_time,
            end_time: r.end_time,
            step: r.step,
            connection: r.connection.into_iter().collect(),
        })
        .map_err(error)?;
        results
            .into_iter()
            .map(|m| {
                Ok(MetricResult {
                    data: object(&m.data)?,
                    metric: m.metric,
                })
            })
            .collect()
    }

    async fn get_logs(&self, r: LogsRequest, _: Deadline) -> Result<LogsPage, ConnectorError> {
        let page = <Adapter<C> as Guest>::get_logs(wit::LogsRequest {
            task_category: category(r.task_category),
            resource_meta: r.resource_meta,
            lines: r.lines,
            token: r.token,
            connection: r.connection.into_iter().collect(),
        })
        .map_err(error)?;
        Ok(LogsPage {
            lines: page.lines,
            next_token: page.next_token,
        })
    }
}
