//! The glue between the WIT bindings and [`Connector`]: used by
//! [`crate::export_connector!`], not part of the public API. Also the
//! doors the contract tests (`tests/fixtures.rs`) use to reach decisions
//! the public API does not expose.

use std::any::type_name;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use wasip2::http::types::ErrorCode;

use crate::{
    Connection, Connector, Context, Error, HttpError, LinkType, LogsPage, LogsQuery, Metadata,
    MetricResult, MetricsQuery, Phase, Resource, TaskCategory, TaskLog, TaskRequest, http,
};

/// The runtime support the generated bindings use.
pub use wit_bindgen::rt;

/// Bindings of the `flyte:connector/plugin` world in `wit/`.
#[allow(missing_docs, unsafe_op_in_unsafe_fn, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "flyte:connector/plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "flyte_connector_sdk::__private::bindings",
        runtime_path: "flyte_connector_sdk::__private::rt",
    });
}

use bindings::exports::flyte::connector::connector as guest;
use bindings::flyte::connector::types as wit;

/// Implements the generated `Guest` trait for any [`Connector`]; the export
/// macro exports `Adapter<TheConnector>`.
pub struct Adapter<C>(PhantomData<fn() -> C>);

impl<C: Connector> guest::Guest for Adapter<C> {
    fn metadata() -> wit::Metadata {
        metadata_to_wit(C::metadata())
    }

    fn create(request: wit::CreateRequest) -> Result<Vec<u8>, wit::Error> {
        http::begin_call();
        let task = TaskRequest::from_parts(
            &request.inputs,
            &request.input_types,
            &request.template,
            request.output_prefix,
            &request.task_execution_metadata,
            request.connection.into_iter().collect(),
        )
        .map_err(error_to_wit)?;
        let meta = C::create(task).map_err(error_to_wit)?;
        encode_meta(&meta).map_err(error_to_wit)
    }

    fn get(request: wit::GetRequest) -> Result<wit::Resource, wit::Error> {
        http::begin_call();
        let meta = decode_meta::<C::Meta>(&request.resource_meta).map_err(error_to_wit)?;
        let ctx = Context::from_parts(
            category_from_wit(request.task_category),
            request.output_prefix,
            request.connection.into_iter().collect(),
        );
        C::get(meta, &ctx)
            .map(resource_to_wit)
            .map_err(error_to_wit)
    }

    fn delete(request: wit::DeleteRequest) -> Result<(), wit::Error> {
        http::begin_call();
        let meta = decode_meta::<C::Meta>(&request.resource_meta).map_err(error_to_wit)?;
        let ctx = Context::from_parts(
            category_from_wit(request.task_category),
            String::new(),
            request.connection.into_iter().collect::<Connection>(),
        );
        C::delete(meta, &ctx).map_err(error_to_wit)
    }

    fn get_metrics(request: wit::MetricsRequest) -> Result<Vec<wit::MetricResult>, wit::Error> {
        http::begin_call();
        let meta = decode_meta::<C::Meta>(&request.resource_meta).map_err(error_to_wit)?;
        let query = MetricsQuery {
            task_category: category_from_wit(request.task_category),
            queries: request.queries,
            start_time: request.start_time,
            end_time: request.end_time,
            step: request.step,
            connection: request.connection.into_iter().collect(),
        };
        C::get_metrics(meta, query)
            .map(|results| results.into_iter().map(metric_to_wit).collect())
            .map_err(error_to_wit)
    }

    fn get_logs(request: wit::LogsRequest) -> Result<wit::LogsPage, wit::Error> {
        http::begin_call();
        let meta = decode_meta::<C::Meta>(&request.resource_meta).map_err(error_to_wit)?;
        let query = LogsQuery {
            task_category: category_from_wit(request.task_category),
            lines: request.lines,
            token: request.token,
            connection: request.connection.into_iter().collect(),
        };
        C::get_logs(meta, query)
            .map(logs_to_wit)
            .map_err(error_to_wit)
    }
}

/// The resource meta bytes of `meta`: its JSON encoding, written as
/// Python's `json.dumps` writes it (what flyte's `ResourceMeta.encode`
/// does), so a meta is byte for byte the one the Python connector makes.
pub fn encode_meta<M: Serialize>(meta: &M) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    let mut writer = serde_json::Serializer::with_formatter(&mut bytes, PythonJson);
    meta.serialize(&mut writer).map_err(|e| {
        Error::Failed(format!(
            "cannot encode the resource meta {} as JSON: {e}",
            type_name::<M>()
        ))
    })?;
    Ok(bytes)
}

/// JSON as Python's `json.dumps` writes it by default: `", "` and `": "`
/// between items, every character outside printable ASCII escaped as
/// `\uXXXX` (UTF-16 units), and floats as Python's `repr` writes them.
struct PythonJson;

/// `", "` before every item but the first.
fn python_separator<W: ?Sized + std::io::Write>(
    writer: &mut W,
    first: bool,
) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        python_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        python_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        writer.write_all(crate::python::float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f32,
    ) -> std::io::Result<()> {
        // Python has only doubles; an f32 reads back as the double nearest it.
        self.write_f64(writer, f64::from(value))
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// The meta encoded in resource meta bytes; bytes that do not decode are an
/// invalid request (the client sent a meta this connector did not make).
pub fn decode_meta<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::InvalidRequest(format!(
            "cannot decode the resource meta as {}: {e}",
            type_name::<M>()
        ))
    })
}

fn error_to_wit(error: Error) -> wit::Error {
    match error {
        Error::Failed(message) => wit::Error::Failed(message),
        Error::InvalidRequest(message) => wit::Error::InvalidRequest(message),
        Error::NotImplemented => wit::Error::NotImplemented,
        Error::Retryable(message) => wit::Error::Retryable(message),
    }
}

fn category_from_wit(category: wit::TaskCategory) -> TaskCategory {
    TaskCategory {
        name: category.name,
        version: category.version,
    }
}

/// The SDK and its version, as components report them to the host.
pub const SDK: &str = concat!("flyte-connector-sdk ", env!("CARGO_PKG_VERSION"), " (Rust)");

fn metadata_to_wit(metadata: Metadata) -> wit::Metadata {
    wit::Metadata {
        sdk: SDK.to_owned(),
        name: metadata.name,
        task_categories: metadata
            .task_categories
            .into_iter()
            .map(|category| wit::TaskCategory {
                name: category.name,
                version: category.version,
            })
            .collect(),
    }
}

fn phase_to_wit(phase: Phase) -> wit::Phase {
    match phase {
        Phase::Undefined => wit::Phase::Undefined,
        Phase::Queued => wit::Phase::Queued,
        Phase::Running => wit::Phase::Running,
        Phase::Succeeded => wit::Phase::Succeeded,
        Phase::Aborted => wit::Phase::Aborted,
        Phase::Failed => wit::Phase::Failed,
        Phase::Initializing => wit::Phase::Initializing,
        Phase::WaitingForResources => wit::Phase::WaitingForResources,
        Phase::RetryableFailed => wit::Phase::RetryableFailed,
    }
}

fn log_to_wit(log: TaskLog) -> wit::TaskLog {
    wit::TaskLog {
        name: log.name,
        uri: log.uri,
        ready: log.ready,
        icon_uri: log.icon_uri,
        show_while_pending: log.show_while_pending,
        hide_once_finished: log.hide_once_finished,
        link_type: match log.link_type {
            LinkType::External => wit::LinkType::External,
            LinkType::Dashboard => wit::LinkType::Dashboard,
            LinkType::Ide => wit::LinkType::Ide,
        },
    }
}

fn resource_to_wit(resource: Resource) -> wit::Resource {
    wit::Resource {
        phase: phase_to_wit(resource.phase),
        message: resource.message,
        log_links: resource.log_links.into_iter().map(log_to_wit).collect(),
        outputs: resource.outputs.map(|outputs| {
            outputs
                .into_iter()
                .map(|(name, output)| wit::Output {
                    name,
                    value: output.value().to_string(),
                    literal_type: output.literal_type().map(Value::to_string),
                })
                .collect()
        }),
        custom_info: resource
            .custom_info
            .map(|info| Value::Object(info).to_string()),
    }
}

fn metric_to_wit(metric: MetricResult) -> wit::MetricResult {
    wit::MetricResult {
        metric: metric.metric,
        data: Value::Object(metric.data).to_string(),
    }
}

fn logs_to_wit(page: LogsPage) -> wit::LogsPage {
    wit::LogsPage {
        lines: page.lines,
        next_token: page.next_token,
    }
}

/// What the HTTP client makes of the wasi:http `error-code` case `case`
/// (its WIT spelling, `HTTP-request-denied`) carrying `payload` (`null`, a
/// number, a string, or a record keyed by WIT field names), for the request
/// `method url`; `None` for a case wasi:http 0.2 does not have. For the
/// tests of `wit/fixtures/http.json`.
pub fn http_error_for_code(
    case: &str,
    payload: &Value,
    method: &str,
    url: &str,
) -> Option<HttpError> {
    error_code(case, payload).map(|code| http::classify_code(code, method, url))
}

/// What the HTTP client makes of a response body whose stream broke
/// carrying the wasi:http `error-code` `code` (`case` and `payload` as for
/// [`http_error_for_code`]), or carrying none, for the request `method
/// url`; `None` for a case wasi:http 0.2 does not have. The step from the
/// stream's error to its code (`http-error-code`) needs a host; this is
/// every step after it.
pub fn http_error_for_body_failure(
    code: Option<(&str, &Value)>,
    method: &str,
    url: &str,
) -> Option<HttpError> {
    let code = match code {
        Some((case, payload)) => Some(error_code(case, payload)?),
        None => None,
    };
    Some(http::classify_body_failure(code, method, url))
}

/// What the HTTP client fails with when a request's `timeout` passes before
/// its answer is read in full.
pub fn http_deadline_error(method: &str, url: &str, timeout: Duration) -> HttpError {
    http::deadline_error(method, url, timeout)
}

/// A response as the HTTP client makes it.
pub fn http_response(method: &str, url: &str, status: u16, body: Vec<u8>) -> http::Response {
    http::response(method, url, status, body)
}

/// The wasi:http error code a fixture names.
fn error_code(case: &str, payload: &Value) -> Option<ErrorCode> {
    use wasip2::http::types::{DnsErrorPayload, FieldSizePayload, TlsAlertReceivedPayload};

    fn text(value: &Value) -> Option<String> {
        value.as_str().map(str::to_owned)
    }
    fn number<T: TryFrom<u64>>(value: &Value) -> Option<T> {
        value.as_u64().and_then(|number| T::try_from(number).ok())
    }
    fn field(value: &Value) -> FieldSizePayload {
        FieldSizePayload {
            field_name: text(&value["field-name"]),
            field_size: number(&value["field-size"]),
        }
    }
    let optional_field = || (!payload.is_null()).then(|| field(payload));

    Some(match case {
        "DNS-timeout" => ErrorCode::DnsTimeout,
        "DNS-error" => ErrorCode::DnsError(DnsErrorPayload {
            rcode: text(&payload["rcode"]),
            info_code: number(&payload["info-code"]),
        }),
        "destination-not-found" => ErrorCode::DestinationNotFound,
        "destination-unavailable" => ErrorCode::DestinationUnavailable,
        "destination-IP-prohibited" => ErrorCode::DestinationIpProhibited,
        "destination-IP-unroutable" => ErrorCode::DestinationIpUnroutable,
        "connection-refused" => ErrorCode::ConnectionRefused,
        "connection-terminated" => ErrorCode::ConnectionTerminated,
        "connection-timeout" => ErrorCode::ConnectionTimeout,
        "connection-read-timeout" => ErrorCode::ConnectionReadTimeout,
        "connection-write-timeout" => ErrorCode::ConnectionWriteTimeout,
        "connection-limit-reached" => ErrorCode::ConnectionLimitReached,
        "TLS-protocol-error" => ErrorCode::TlsProtocolError,
        "TLS-certificate-error" => ErrorCode::TlsCertificateError,
        "TLS-alert-received" => ErrorCode::TlsAlertReceived(TlsAlertReceivedPayload {
            alert_id: number(&payload["alert-id"]),
            alert_message: text(&payload["alert-message"]),
        }),
        "HTTP-request-denied" => ErrorCode::HttpRequestDenied,
        "HTTP-request-length-required" => ErrorCode::HttpRequestLengthRequired,
        "HTTP-request-body-size" => ErrorCode::HttpRequestBodySize(number(payload)),
        "HTTP-request-method-invalid" => ErrorCode::HttpRequestMethodInvalid,
        "HTTP-request-URI-invalid" => ErrorCode::HttpRequestUriInvalid,
        "HTTP-request-URI-too-long" => ErrorCode::HttpRequestUriTooLong,
        "HTTP-request-header-section-size" => {
            ErrorCode::HttpRequestHeaderSectionSize(number(payload))
        }
        "HTTP-request-header-size" => ErrorCode::HttpRequestHeaderSize(optional_field()),
        "HTTP-request-trailer-section-size" => {
            ErrorCode::HttpRequestTrailerSectionSize(number(payload))
        }
        "HTTP-request-trailer-size" => ErrorCode::HttpRequestTrailerSize(field(payload)),
        "HTTP-response-incomplete" => ErrorCode::HttpResponseIncomplete,
        "HTTP-response-header-section-size" => {
            ErrorCode::HttpResponseHeaderSectionSize(number(payload))
        }
        "HTTP-response-header-size" => ErrorCode::HttpResponseHeaderSize(field(payload)),
        "HTTP-response-body-size" => ErrorCode::HttpResponseBodySize(number(payload)),
        "HTTP-response-trailer-section-size" => {
            ErrorCode::HttpResponseTrailerSectionSize(number(payload))
        }
        "HTTP-response-trailer-size" => ErrorCode::HttpResponseTrailerSize(field(payload)),
        "HTTP-response-transfer-coding" => ErrorCode::HttpResponseTransferCoding(text(payload)),
        "HTTP-response-content-coding" => ErrorCode::HttpResponseContentCoding(text(payload)),
        "HTTP-response-timeout" => ErrorCode::HttpResponseTimeout,
        "HTTP-upgrade-failed" => ErrorCode::HttpUpgradeFailed,
        "HTTP-protocol-error" => ErrorCode::HttpProtocolError,
        "loop-detected" => ErrorCode::LoopDetected,
        "configuration-error" => ErrorCode::ConfigurationError,
        "internal-error" => ErrorCode::InternalError(text(payload)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::guest::Guest;
    use super::*;
    use crate::{Output, Outputs};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Meta {
        job: String,
        inputs: serde_json::Map<String, Value>,
    }

    struct Test;

    impl Connector for Test {
        type Meta = Meta;

        fn metadata() -> Metadata {
            Metadata::new("Test Connector")
                .task_type("t")
                .task_type_version("t", 2)
        }

        fn create(task: TaskRequest) -> Result<Meta, Error> {
            if task.task_type() == "fail" {
                return Err(Error::failed("nope"));
            }
            let _a: Option<i64> = task.input("a")?;
            Ok(Meta {
                job: format!("{}:{}", task.secret("token")?, task.output_prefix()),
                inputs: task.inputs()?,
            })
        }

        fn get(meta: Meta, ctx: &Context) -> Result<Resource, Error> {
            let mut outputs = Outputs::new();
            outputs.insert("job", &meta.job)?;
            outputs.insert_output("when", Output::duration(std::time::Duration::from_secs(2)));
            Resource::succeeded()
                .message(format!("{} {}", ctx.task_type(), ctx.output_prefix()))
                .log_link(TaskLog::new("console", "https://x"))
                .outputs(outputs)
                .custom_info(json!({"n": meta.inputs.len()}))
        }

        fn delete(_meta: Meta, ctx: &Context) -> Result<(), Error> {
            ctx.secret("token").map(drop)
        }
    }

    fn category() -> wit::TaskCategory {
        wit::TaskCategory {
            name: "t".into(),
            version: 0,
        }
    }

    fn create(template: &str, inputs: &str) -> Result<Vec<u8>, wit::Error> {
        Adapter::<Test>::create(wit::CreateRequest {
            inputs: inputs.into(),
            input_types: "{}".into(),
            template: template.into(),
            output_prefix: "s3://out".into(),
            task_execution_metadata: "{}".into(),
            connection: vec![("token".into(), "abc".into())],
        })
    }

    #[test]
    fn metadata() {
        let metadata = Adapter::<Test>::metadata();
        assert_eq!(metadata.name, "Test Connector");
        assert_eq!(metadata.task_categories.len(), 2);
        assert_eq!(metadata.task_categories[1].version, 2);
    }

    #[test]
    fn meta_round_trip() {
        let meta = Meta {
            job: "j".into(),
            inputs: json!({"x": [1, 2]}).as_object().cloned().unwrap(),
        };
        let bytes = encode_meta(&meta).unwrap();
        // As Python's json.dumps(asdict(meta)) writes it.
        assert_eq!(bytes, br#"{"job": "j", "inputs": {"x": [1, 2]}}"#);
        assert_eq!(decode_meta::<Meta>(&bytes).unwrap(), meta);

        let Err(Error::InvalidRequest(message)) = decode_meta::<Meta>(b"{\"job\": 1}") else {
            panic!("expected invalid request");
        };
        assert!(
            message.starts_with("cannot decode the resource meta as "),
            "{message}"
        );
        assert!(message.contains("Meta"), "{message}");
        assert!(decode_meta::<Meta>(b"\xff").is_err());

        let unicode = encode_meta(&json!({"s": "é\u{1F600}\u{7f}\n\"/"})).unwrap();
        assert_eq!(
            String::from_utf8(unicode).unwrap(),
            r#"{"s": "\u00e9\ud83d\ude00\u007f\n\"/"}"#
        );
        assert!(decode_meta::<Meta>(b"").is_err());
    }

    #[test]
    fn create_then_get_then_delete() {
        let meta = create(r#"{"type": "t"}"#, r#"{"a": 1}"#).unwrap();
        assert_eq!(
            decode_meta::<Meta>(&meta).unwrap(),
            Meta {
                job: "abc:s3://out".into(),
                inputs: json!({"a": 1}).as_object().cloned().unwrap(),
            }
        );

        let resource = Adapter::<Test>::get(wit::GetRequest {
            task_category: category(),
            resource_meta: meta.clone(),
            output_prefix: "s3://out".into(),
            connection: vec![],
        })
        .unwrap();
        assert!(matches!(resource.phase, wit::Phase::Succeeded));
        assert_eq!(resource.message, "t s3://out");
        assert_eq!(resource.log_links[0].uri, "https://x");
        assert!(resource.log_links[0].ready);
        let outputs = resource.outputs.unwrap();
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[0].name, "job");
        assert_eq!(outputs[0].value, r#""abc:s3://out""#);
        assert_eq!(outputs[0].literal_type, None);
        assert_eq!(outputs[1].name, "when");
        assert_eq!(outputs[1].value, r#""2s""#);
        assert_eq!(
            outputs[1].literal_type.as_deref(),
            Some(r#"{"simple":"DURATION"}"#)
        );
        assert_eq!(resource.custom_info.as_deref(), Some(r#"{"n":1}"#));

        let deleted = Adapter::<Test>::delete(wit::DeleteRequest {
            task_category: category(),
            resource_meta: meta.clone(),
            connection: vec![],
        });
        assert!(matches!(deleted, Err(wit::Error::InvalidRequest(m)) if m.contains("`token`")));
        let deleted = Adapter::<Test>::delete(wit::DeleteRequest {
            task_category: category(),
            resource_meta: meta,
            connection: vec![("token".into(), "abc".into())],
        });
        assert!(deleted.is_ok());
    }

    #[test]
    fn errors_cross_the_boundary() {
        assert!(matches!(
            create(r#"{"type": "fail"}"#, "{}"),
            Err(wit::Error::Failed(m)) if m == "nope"
        ));
        assert!(matches!(
            create("{", "{}"),
            Err(wit::Error::InvalidRequest(m)) if m.contains("task template")
        ));
        assert!(matches!(
            create(r#"{"type": "t"}"#, r#"{"a": "x"}"#),
            Err(wit::Error::InvalidRequest(m)) if m.contains("input `a`")
        ));
        let got = Adapter::<Test>::get(wit::GetRequest {
            task_category: category(),
            resource_meta: b"not json".to_vec(),
            output_prefix: String::new(),
            connection: vec![],
        });
        assert!(matches!(got, Err(wit::Error::InvalidRequest(m)) if m.contains("resource meta")));
    }

    #[test]
    fn metadata_reports_the_sdk_and_its_version() {
        let metadata = Adapter::<Test>::metadata();
        assert_eq!(metadata.sdk, SDK);
        assert!(
            SDK.starts_with("flyte-connector-sdk ") && SDK.ends_with(" (Rust)"),
            "{SDK}"
        );
    }

    #[test]
    fn unimplemented_by_default() {
        let meta = create(r#"{"type": "t"}"#, "{}").unwrap();
        let metrics = Adapter::<Test>::get_metrics(wit::MetricsRequest {
            task_category: category(),
            resource_meta: meta.clone(),
            queries: vec!["q".into()],
            start_time: None,
            end_time: None,
            step: None,
            connection: vec![],
        });
        assert!(matches!(metrics, Err(wit::Error::NotImplemented)));
        let logs = Adapter::<Test>::get_logs(wit::LogsRequest {
            task_category: category(),
            resource_meta: meta,
            lines: 0,
            token: String::new(),
            connection: vec![],
        });
        assert!(matches!(logs, Err(wit::Error::NotImplemented)));
    }
}
