//! Host bindings of the `flyte:connector/plugin` world (`wit/`), and the
//! conversions between its types and the host's [`crate::connector`] types.
//!
//! JSON travels as text across the boundary; it is parsed here, so a guest
//! that returns malformed JSON fails its call with a clear message.

use serde_json::Value;

use crate::connector::{
    self, ConnectorError, ConnectorInfo, LinkType, LogsPage, MetricResult, Output, Phase, Resource,
    TaskCategory, TaskLog,
};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "flyte:connector/plugin",
    exports: { default: async },
    // The imports are the capabilities', bound where each is.
    with: {
        "flyte:connector/ssh": super::capabilities::ssh_interface,
        "flyte:connector/storage": super::capabilities::storage_interface,
        "flyte:connector/call": super::capabilities::call_interface,
        "flyte:connector/http-retries": super::capabilities::http_retries_interface,
    },
});

pub(super) use flyte::connector::types as wit;

/// The async world, `flyte:connector/async-plugin` (since 1.3.0): the same
/// types, its operations exported as `async` functions, so that calls may
/// be entered concurrently (`call::concurrent`).
pub(super) mod async_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "flyte:connector/async-plugin",
        exports: { default: async },
        with: {
            "flyte:connector/types": super::flyte::connector::types,
            "flyte:connector/call": crate::runtime::capabilities::call_interface,
            "flyte:connector/http-retries": crate::runtime::capabilities::http_retries_interface,
            "flyte:connector/waits": crate::runtime::capabilities::waits_interface,
        },
    });
}

pub(super) use async_world::{AsyncPlugin, AsyncPluginPre};

/// The exports of an instance, of whichever world its component targets.
pub(super) enum Exports {
    /// `plugin`: one call at a time.
    Sync(Plugin),
    /// `async-plugin`: calls of one tenant at once.
    Async(AsyncPlugin),
}

/// A component pre-linked, of whichever world it targets.
#[derive(Clone)]
pub(super) enum ExportsPre {
    /// `plugin`.
    Sync(PluginPre<super::capabilities::HostState>),
    /// `async-plugin`.
    Async(AsyncPluginPre<super::capabilities::HostState>),
}

impl ExportsPre {
    /// The component's world's exports, linked by `pre`.
    pub(super) fn new(
        pre: wasmtime::component::InstancePre<super::capabilities::HostState>,
        concurrent: bool,
    ) -> wasmtime::Result<Self> {
        Ok(if concurrent {
            Self::Async(AsyncPluginPre::new(pre)?)
        } else {
            Self::Sync(PluginPre::new(pre)?)
        })
    }

    /// Whether its calls may share an instance at once.
    pub(super) fn is_concurrent(&self) -> bool {
        matches!(self, Self::Async(_))
    }

    /// Instantiates it in `store`.
    pub(super) async fn instantiate_async(
        &self,
        store: &mut wasmtime::Store<super::capabilities::HostState>,
    ) -> wasmtime::Result<Exports> {
        Ok(match self {
            Self::Sync(pre) => Exports::Sync(pre.instantiate_async(store).await?),
            Self::Async(pre) => Exports::Async(pre.instantiate_async(store).await?),
        })
    }
}

impl Exports {
    /// The connector's metadata (a sync export in both worlds).
    pub(super) async fn call_metadata(
        &self,
        store: &mut wasmtime::Store<super::capabilities::HostState>,
    ) -> wasmtime::Result<wit::Metadata> {
        match self {
            Self::Sync(plugin) => {
                plugin
                    .flyte_connector_connector()
                    .call_metadata(store)
                    .await
            }
            Self::Async(plugin) => {
                plugin
                    .flyte_connector_async_connector()
                    .call_metadata(store)
                    .await
            }
        }
    }

    /// The sync world's exports; an error for a component of the async
    /// world, whose calls the host makes concurrently.
    pub(super) fn sync(&self) -> wasmtime::Result<&Plugin> {
        match self {
            Self::Sync(plugin) => Ok(plugin),
            Self::Async(_) => Err(wasmtime::format_err!(
                "a component of the async world called as one of the sync world"
            )),
        }
    }
}

fn category_to_wit(category: &TaskCategory) -> wit::TaskCategory {
    wit::TaskCategory {
        name: category.name.clone(),
        version: category.version,
    }
}

fn connection_to_wit(connection: connector::ConnectionMap) -> Vec<(String, String)> {
    connection.into_iter().collect()
}

fn json_object_text(object: &serde_json::Map<String, Value>) -> String {
    // Serializing a map of JSON values cannot fail.
    serde_json::to_string(object).unwrap_or_else(|_| "{}".to_owned())
}

pub(super) fn create_request(request: connector::CreateRequest) -> wit::CreateRequest {
    wit::CreateRequest {
        inputs: json_object_text(&request.inputs),
        input_types: json_object_text(&request.input_types),
        template: request.template.to_string(),
        output_prefix: request.output_prefix,
        task_execution_metadata: request.task_execution_metadata.to_string(),
        connection: connection_to_wit(request.connection),
    }
}

pub(super) fn get_request(request: connector::GetRequest) -> wit::GetRequest {
    wit::GetRequest {
        task_category: category_to_wit(&request.task_category),
        resource_meta: request.resource_meta,
        output_prefix: request.output_prefix,
        connection: connection_to_wit(request.connection),
    }
}

pub(super) fn delete_request(request: connector::DeleteRequest) -> wit::DeleteRequest {
    wit::DeleteRequest {
        task_category: category_to_wit(&request.task_category),
        resource_meta: request.resource_meta,
        connection: connection_to_wit(request.connection),
    }
}

pub(super) fn metrics_request(request: connector::MetricsRequest) -> wit::MetricsRequest {
    wit::MetricsRequest {
        task_category: category_to_wit(&request.task_category),
        resource_meta: request.resource_meta,
        queries: request.queries,
        start_time: request.start_time,
        end_time: request.end_time,
        step: request.step,
        connection: connection_to_wit(request.connection),
    }
}

pub(super) fn logs_request(request: connector::LogsRequest) -> wit::LogsRequest {
    wit::LogsRequest {
        task_category: category_to_wit(&request.task_category),
        resource_meta: request.resource_meta,
        lines: request.lines,
        token: request.token,
        connection: connection_to_wit(request.connection),
    }
}

/// The bytes a request holds in host memory while its call waits and runs,
/// as the memory budget charges them, and where its task's outputs go.
pub(super) trait CallRequest {
    fn held_bytes(&self) -> u64;

    /// The request's output prefix, when it has a non-empty one.
    fn output_prefix(&self) -> Option<std::sync::Arc<str>> {
        None
    }
}

fn prefix_of(prefix: &str) -> Option<std::sync::Arc<str>> {
    (!prefix.is_empty()).then(|| std::sync::Arc::from(prefix))
}

fn strings<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    parts.into_iter().map(|part| part.len() as u64).sum()
}

fn connection_bytes(connection: &[(String, String)]) -> u64 {
    strings(
        connection
            .iter()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
    )
}

impl CallRequest for wit::CreateRequest {
    fn output_prefix(&self) -> Option<std::sync::Arc<str>> {
        prefix_of(&self.output_prefix)
    }

    fn held_bytes(&self) -> u64 {
        strings([
            self.inputs.as_str(),
            &self.input_types,
            &self.template,
            &self.output_prefix,
            &self.task_execution_metadata,
        ]) + connection_bytes(&self.connection)
    }
}

impl CallRequest for wit::GetRequest {
    fn output_prefix(&self) -> Option<std::sync::Arc<str>> {
        prefix_of(&self.output_prefix)
    }

    fn held_bytes(&self) -> u64 {
        self.resource_meta.len() as u64
            + strings([self.output_prefix.as_str()])
            + connection_bytes(&self.connection)
    }
}

impl CallRequest for wit::DeleteRequest {
    fn held_bytes(&self) -> u64 {
        self.resource_meta.len() as u64 + connection_bytes(&self.connection)
    }
}

impl CallRequest for wit::MetricsRequest {
    fn held_bytes(&self) -> u64 {
        self.resource_meta.len() as u64
            + strings(self.queries.iter().map(String::as_str))
            + connection_bytes(&self.connection)
    }
}

impl CallRequest for wit::LogsRequest {
    fn held_bytes(&self) -> u64 {
        self.resource_meta.len() as u64
            + strings([self.token.as_str()])
            + connection_bytes(&self.connection)
    }
}

/// The connector's name and task types, and the SDK that built it.
pub(super) fn info(metadata: wit::Metadata) -> (ConnectorInfo, String) {
    let sdk = metadata.sdk;
    let info = ConnectorInfo {
        name: metadata.name,
        task_categories: metadata
            .task_categories
            .into_iter()
            .map(|c| TaskCategory {
                name: c.name,
                version: c.version,
            })
            .collect(),
    };
    (info, sdk)
}

pub(super) fn error(error: wit::Error) -> ConnectorError {
    match error {
        wit::Error::Failed(message) => ConnectorError::Failed(guest_text(message)),
        wit::Error::InvalidRequest(message) => ConnectorError::InvalidRequest(guest_text(message)),
        wit::Error::NotImplemented => ConnectorError::NotImplemented,
        wit::Error::Retryable(message) => ConnectorError::Retryable(guest_text(message)),
    }
}

/// The most of a guest's text an error carries, counted as the bytes it
/// takes in a gRPC status (`grpc-message` percent-encodes all but printable
/// ASCII, three bytes each): gRPC clients refuse trailers past 8 KiB
/// (grpcio's default), and every failure is also written to the log.
const MAX_ERROR_WIRE_BYTES: usize = 6 * 1024;

/// `text`, a guest's error message, cut to [`MAX_ERROR_WIRE_BYTES`] with the
/// cut marked.
pub(super) fn guest_text(text: String) -> String {
    let mut wire = 0;
    let cut = text.char_indices().find_map(|(at, c)| {
        wire += if c.is_ascii_graphic() && c != '%' || c == ' ' {
            1
        } else {
            3 * c.len_utf8()
        };
        (wire > MAX_ERROR_WIRE_BYTES).then_some(at)
    });
    match cut {
        None => text,
        Some(at) => format!("{}… [{} more bytes cut]", &text[..at], text.len() - at),
    }
}

/// Parses JSON the guest returned; `what` names it in the error.
fn parse_json(text: &str, what: &str) -> Result<Value, ConnectorError> {
    serde_json::from_str(text).map_err(|err| {
        ConnectorError::Failed(format!("connector returned invalid JSON for {what}: {err}"))
    })
}

fn parse_object(text: &str, what: &str) -> Result<serde_json::Map<String, Value>, ConnectorError> {
    match parse_json(text, what)? {
        Value::Object(map) => Ok(map),
        other => Err(ConnectorError::Failed(format!(
            "connector returned {what} that is not a JSON object: {other}"
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

pub(super) fn resource(resource: wit::Resource) -> Result<Resource, ConnectorError> {
    let outputs = resource
        .outputs
        .map(|outputs| {
            outputs
                .into_iter()
                .map(|o| {
                    let value = parse_json(&o.value, &format!("output {:?}", o.name))?;
                    let literal_type = o
                        .literal_type
                        .map(|t| {
                            parse_json(&t, &format!("the literal type of output {:?}", o.name))
                        })
                        .transpose()?;
                    Ok(Output {
                        name: o.name,
                        value,
                        literal_type,
                    })
                })
                .collect::<Result<Vec<_>, ConnectorError>>()
        })
        .transpose()?;
    let custom_info = resource
        .custom_info
        .map(|text| parse_object(&text, "custom_info"))
        .transpose()?;
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
        custom_info,
    })
}

pub(super) fn metric_results(
    results: Vec<wit::MetricResult>,
) -> Result<Vec<MetricResult>, ConnectorError> {
    results
        .into_iter()
        .map(|r| {
            let data = parse_object(&r.data, &format!("the data of metric {:?}", r.metric))?;
            Ok(MetricResult {
                metric: r.metric,
                data,
            })
        })
        .collect()
}

pub(super) fn logs_page(page: wit::LogsPage) -> LogsPage {
    LogsPage {
        lines: page.lines,
        next_token: page.next_token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guests_error_text_is_cut_to_what_a_status_carries() {
        assert_eq!(guest_text("short".to_owned()), "short");
        let long = guest_text("x".repeat(200 << 10));
        assert!(
            long.starts_with(&"x".repeat(MAX_ERROR_WIRE_BYTES)),
            "{}",
            long.len()
        );
        assert!(
            long.ends_with(&format!(
                "… [{} more bytes cut]",
                (200 << 10) - MAX_ERROR_WIRE_BYTES
            )),
            "{}",
            &long[long.len() - 40..]
        );
        // Characters a status percent-encodes count three times a byte.
        let wide = guest_text("é".repeat(4096));
        let kept = wide.split('…').next().unwrap_or_default();
        assert_eq!(kept.chars().count(), MAX_ERROR_WIRE_BYTES / 6);
        let ConnectorError::Failed(failed) = error(wit::Error::Failed("y".repeat(1 << 22))) else {
            panic!("not a failure");
        };
        assert!(failed.len() < MAX_ERROR_WIRE_BYTES + 64, "{}", failed.len());
    }
}
