//! The `flyte:connector/waits` interface (since 1.3.0): what a call of the
//! async world waits on, each wait suspending only its own call.
//!
//! - `send`: an HTTP request with its body whole, through the same
//!   [`InstanceHooks`](super::policy::InstanceHooks) as
//!   `wasi:http/outgoing-handler` — the allow-list, limits, response cap,
//!   pooled connections, metrics and spans — answered with the response's
//!   body whole;
//! - `sleep`: a timer (the Python SDK's `asyncio.sleep`);
//! - `log`: text for the call's log.
//!
//! Each acts for the call that made it ([`call_of`]), and ends at once when
//! that call ends: a request is dropped (its connection closed) and fails
//! as `cancelled`; a sleep answers `call-ended`. It lives beside outbound
//! HTTP because `send` is a request of its grant; `sleep` and `log` need
//! nothing of a grant.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Access, Accessor, Linker};
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiHttpHooks, p2::bindings::http::types::ErrorCode,
};

use super::{InstanceHttp, OutboundHttp};
use crate::runtime::capabilities::{
    CallEnd, CapabilityView, HasState, ViewOf, concurrent_calls::call_of, view_of,
};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "import flyte:connector/waits@1.3.0;",
        imports: { "flyte:connector/waits.log": store },
    });
}

pub use self::generated::flyte::connector::waits as wit_interface;
use wit_interface::{HttpFailure, HttpRequest, HttpResponse, SleepEnd};

/// Adds the interface's imports to `linker`.
pub(super) fn add_to_linker<T: HasState<OutboundHttp>>(
    linker: &mut Linker<T>,
) -> anyhow::Result<()> {
    wit_interface::add_to_linker::<T, ViewOf<OutboundHttp>>(linker, view_of::<OutboundHttp, T>)?;
    Ok(())
}

impl wit_interface::Host for CapabilityView<'_, InstanceHttp> {}

impl<T> wit_interface::HostWithStore<T> for ViewOf<OutboundHttp> {
    async fn send(
        accessor: &Accessor<T, Self>,
        request: HttpRequest,
    ) -> Result<HttpResponse, HttpFailure> {
        let sent = accessor.with(|mut access| {
            let call = call_of(&mut access)?;
            let hooks = &mut access.get().state.hooks;
            let sent = prepare(request, |name| hooks.is_forbidden_header(name)).map(
                |(request, options)| {
                    let open_requests = call.open_requests(|| hooks.open_requests());
                    let sent =
                        call.in_scope(|| hooks.send_counted(request, Some(options), open_requests));
                    Box::into_pin(sent)
                },
            );
            Some((call, sent))
        });
        let Some((call, sent)) = sent else {
            return Err(ended());
        };
        let response = sent?;
        let answered = async {
            let (response, _body_errors) =
                response.await.map_err(|error| failure(error, accessor))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|error| failure(error, accessor))?
                .to_bytes();
            Ok(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                        (name.as_str().to_owned(), value)
                    })
                    .collect(),
                body: body.to_vec(),
            })
        };
        tokio::select! {
            answer = answered => answer,
            _ = call.until_ended() => Err(ended()),
        }
    }

    async fn sleep(accessor: &Accessor<T, Self>, nanos: u64) -> SleepEnd {
        let Some(call) = accessor.with(|mut access| call_of(&mut access)) else {
            return SleepEnd::CallEnded;
        };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_nanos(nanos)) => SleepEnd::Elapsed,
            _ = call.until_ended() => SleepEnd::CallEnded,
        }
    }

    fn log(mut access: Access<'_, T, Self>, text: String) {
        match call_of(&mut access) {
            Some(call) if call.ended() != Some(CallEnd::GivenUp) => {
                call.in_scope(|| call.log().write_text(&text));
            }
            // Written outside a call, or after it was given up (its log is
            // finished): logged for the connector alone.
            _ if text.trim().is_empty() => {}
            _ => {
                let view = access.get();
                tracing::info!(target: "connector", connector = %view.state.hooks.connector(), "{}", text.trim_end());
            }
        }
    }
}

/// `request` as the hooks take it, with the timeouts it asks for; or why
/// it cannot be sent (a header `is_forbidden`, as the hooks judge the
/// headers of a `wasi:http` request).
fn prepare(
    request: HttpRequest,
    mut is_forbidden: impl FnMut(&HeaderName) -> bool,
) -> Result<(http::Request<wasmtime_wasi_http::WasiBody>, RequestOptions), HttpFailure> {
    let invalid = |code: &str, message: String| HttpFailure {
        code: code.to_owned(),
        message,
    };
    let method = Method::from_bytes(request.method.as_bytes()).map_err(|_| {
        invalid(
            "HTTP-request-method-invalid",
            format!("{:?} is not an HTTP method", request.method),
        )
    })?;
    let uri: Uri = request
        .url
        .parse()
        .ok()
        .filter(|uri: &Uri| {
            uri.authority().is_some() && matches!(uri.scheme_str(), Some("http" | "https"))
        })
        .ok_or_else(|| {
            invalid(
                "HTTP-request-URI-invalid",
                "the URL is not an absolute http:// or https:// URL".to_owned(),
            )
        })?;
    let shown = super::Target::of(&uri).shown();
    let nanos = |value: Option<u64>| value.map(Duration::from_nanos);
    let options = RequestOptions {
        connect_timeout: nanos(request.connect_timeout),
        first_byte_timeout: nanos(request.first_byte_timeout),
        between_bytes_timeout: None,
    };
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in &request.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .zip(HeaderValue::from_bytes(value.as_bytes()).ok());
        let Some((name, value)) = header else {
            return Err(invalid(
                "internal-error",
                format!("the request to {shown} has an invalid header {name:?}"),
            ));
        };
        if is_forbidden(&name) {
            return Err(invalid(
                "internal-error",
                format!("the request to {shown} may not set header {name}"),
            ));
        }
        builder = builder.header(name, value);
    }
    let body = Full::new(bytes::Bytes::from(request.body))
        .map_err(|never| match never {})
        .boxed_unsync();
    let request = builder.body(body).map_err(|error| {
        invalid(
            "internal-error",
            format!("the request to {shown} is invalid: {error}"),
        )
    })?;
    Ok((request, options))
}

/// The failure a call sees once it has ended.
fn ended() -> HttpFailure {
    HttpFailure {
        code: "cancelled".to_owned(),
        message: "the call has ended".to_owned(),
    }
}

/// `error` of a request, named by its wasi:http error code: hyper's,
/// connecting's and TLS's errors as wasi:http's hooks name them.
fn failure<T>(error: Error, accessor: &Accessor<T, ViewOf<OutboundHttp>>) -> HttpFailure {
    let error = match error {
        Error::Hyper(error) => accessor.with(|mut access| {
            let hooks = &mut access.get().state.hooks;
            let code = std::error::Error::source(&error)
                .and_then(|cause| cause.downcast_ref::<ErrorCode>().cloned())
                .unwrap_or_else(|| hooks.p2_error_from_hyper(&error));
            Error::from(code)
        }),
        Error::Connect(error) => accessor
            .with(|mut access| Error::from(access.get().state.hooks.p2_error_from_connect(&error))),
        Error::Tls(error) => accessor
            .with(|mut access| Error::from(access.get().state.hooks.p2_error_from_tls(&error))),
        other => other,
    };
    let (code, message) = described(&error);
    HttpFailure { code, message }
}

/// An error code's WIT case name, and the code as the SDKs write it: the
/// case name with its payload's parts (`DNS-error (rcode NXDOMAIN,
/// info-code 3)`), or an `internal-error`'s own text.
fn described(error: &Error) -> (String, String) {
    let case = wit_case_name(&format!("{error:?}"));
    let named = |name: &str, value: Option<String>| value.map(|value| format!("{name} {value}"));
    let field = |name: &Option<String>, size: &Option<u32>| {
        vec![
            named("field-name", name.clone()),
            named("field-size", size.map(|s| s.to_string())),
        ]
    };
    let parts: Vec<Option<String>> = match error {
        Error::DnsError { rcode, info_code } => vec![
            named("rcode", rcode.clone()),
            named("info-code", info_code.map(|c| c.to_string())),
        ],
        Error::TlsAlertReceived {
            alert_id,
            alert_message,
        } => vec![
            named("alert-id", alert_id.map(|id| id.to_string())),
            named("alert-message", alert_message.clone()),
        ],
        Error::HttpRequestBodySize(size) | Error::HttpResponseBodySize(size) => {
            vec![size.map(|s| s.to_string())]
        }
        Error::HttpRequestHeaderSectionSize(size)
        | Error::HttpRequestTrailerSectionSize(size)
        | Error::HttpResponseHeaderSectionSize(size)
        | Error::HttpResponseTrailerSectionSize(size) => vec![size.map(|s| s.to_string())],
        Error::HttpRequestHeaderSize {
            field_name,
            field_size,
        }
        | Error::HttpRequestTrailerSize {
            field_name,
            field_size,
        }
        | Error::HttpResponseHeaderSize {
            field_name,
            field_size,
        }
        | Error::HttpResponseTrailerSize {
            field_name,
            field_size,
        } => field(field_name, field_size),
        Error::HttpResponseTransferCoding(coding) | Error::HttpResponseContentCoding(coding) => {
            vec![coding.clone()]
        }
        Error::InternalError(Some(text)) => return (case, text.clone()),
        _ => Vec::new(),
    };
    let parts: Vec<String> = parts.into_iter().flatten().collect();
    let message = if parts.is_empty() {
        case.clone()
    } else {
        format!("{case} ({})", parts.join(", "))
    };
    (case, message)
}

/// The WIT case name of an error code written as Rust's `Debug` writes
/// its variant (`DnsTimeout`, `HttpRequestUriInvalid(..)`): kebab case,
/// with the acronyms wasi:http capitalises (`DNS-timeout`,
/// `HTTP-request-URI-invalid`).
fn wit_case_name(debug: &str) -> String {
    let variant = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default();
    let mut words = Vec::new();
    let mut word = String::new();
    for c in variant.chars() {
        if c.is_ascii_uppercase() && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.push(c);
    }
    words.push(word);
    words
        .iter()
        .map(|word| match word.as_str() {
            "Dns" | "Http" | "Tls" | "Uri" | "Ip" => word.to_ascii_uppercase(),
            _ => word.to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_named_as_wit_names_them() {
        for (debug, wit) in [
            ("ConnectionRefused", "connection-refused"),
            ("DnsTimeout", "DNS-timeout"),
            ("DnsError(DnsErrorPayload { rcode: None })", "DNS-error"),
            ("HttpRequestUriInvalid", "HTTP-request-URI-invalid"),
            ("HttpResponseBodySize(Some(8))", "HTTP-response-body-size"),
            ("TlsCertificateError", "TLS-certificate-error"),
            ("DestinationIpProhibited", "destination-IP-prohibited"),
            ("HttpRequestDenied", "HTTP-request-denied"),
            ("InternalError(Some(\"x\"))", "internal-error"),
        ] {
            assert_eq!(wit_case_name(debug), wit, "{debug}");
        }
    }

    #[test]
    fn codes_are_written_as_the_sdks_write_them() {
        let cases = [
            (
                Error::ConnectionRefused,
                "connection-refused",
                "connection-refused",
            ),
            (
                Error::DnsError {
                    rcode: Some("NXDOMAIN".to_owned()),
                    info_code: Some(3),
                },
                "DNS-error",
                "DNS-error (rcode NXDOMAIN, info-code 3)",
            ),
            (
                Error::DnsError {
                    rcode: None,
                    info_code: None,
                },
                "DNS-error",
                "DNS-error",
            ),
            (
                Error::HttpResponseHeaderSize {
                    field_name: Some("set-cookie".to_owned()),
                    field_size: Some(70000),
                },
                "HTTP-response-header-size",
                "HTTP-response-header-size (field-name set-cookie, field-size 70000)",
            ),
            (
                Error::HttpResponseBodySize(Some(1048576)),
                "HTTP-response-body-size",
                "HTTP-response-body-size (1048576)",
            ),
            (
                Error::InternalError(Some("TLS handshake with a:443 failed".to_owned())),
                "internal-error",
                "TLS handshake with a:443 failed",
            ),
        ];
        for (error, code, message) in cases {
            assert_eq!(described(&error), (code.to_owned(), message.to_owned()));
        }
    }

    fn forbidden(name: &HeaderName) -> bool {
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    #[test]
    fn only_absolute_http_urls_with_valid_parts_are_sent() {
        let request = |method: &str, url: &str, headers: &[(&str, &str)]| HttpRequest {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: b"{}".to_vec(),
            first_byte_timeout: Some(2_000_000_000),
            connect_timeout: None,
        };
        let (sent, options) = prepare(
            request("POST", "https://api.example.com/x?y=1", &[("a", "b")]),
            forbidden,
        )
        .expect("valid");
        assert_eq!(sent.method(), Method::POST);
        assert_eq!(sent.headers()["a"], "b");
        assert_eq!(options.first_byte_timeout, Some(Duration::from_secs(2)));
        assert_eq!(options.connect_timeout, None);
        for (bad, code) in [
            (
                request("GE T", "https://a.example.com/", &[]),
                "HTTP-request-method-invalid",
            ),
            (request("GET", "/relative", &[]), "HTTP-request-URI-invalid"),
            (
                request("GET", "ftp://a.example.com/", &[]),
                "HTTP-request-URI-invalid",
            ),
            (
                request("GET", "https://a.example.com/", &[("host", "b")]),
                "internal-error",
            ),
            (
                request("GET", "https://a.example.com/", &[("bad name", "b")]),
                "internal-error",
            ),
        ] {
            let failure = prepare(bad, forbidden).expect_err("refused");
            assert_eq!(failure.code, code, "{}", failure.message);
        }
    }
}
