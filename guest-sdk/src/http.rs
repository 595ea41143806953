//! Outbound HTTP for connectors: a blocking client over
//! `wasi:http/outgoing-handler`, written against the wasi:http bindings
//! ([`wasip2`]) and waiting on [`wstd`]'s reactor.
//!
//! ```no_run
//! use flyte_connector_sdk::{http, Error};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Submitted { run_id: u64 }
//!
//! fn submit(token: &str) -> Result<u64, Error> {
//!     let answer: Submitted = http::post("https://example.com/api/2.1/jobs/runs/submit")
//!         .bearer_auth(token)
//!         .json(&serde_json::json!({"run_name": "flyte"}))?
//!         .send()?           // denied, unreachable, timed out: an HttpError
//!         .error_for_status()? // 4xx and 5xx: an HttpError carrying the body
//!         .json()?;
//!     Ok(answer.run_id)
//! }
//! ```
//!
//! The host sends only what the connector's manifest allows
//! (`allowed_hosts`); anything else fails with [`HttpError::Denied`].
//!
//! # What answers and failures mean
//!
//! Both SDKs keep the same contract, fixed by `wit/fixtures/http.json` and
//! checked against it by their tests:
//!
//! - **ok** is a status below 400 ([`Response::is_ok`]). 1xx, 2xx and 3xx
//!   are answers (wasi:http follows no redirects); [`Response::error_for_status`]
//!   turns 4xx and 5xx into [`HttpError::Status`].
//! - **retryable** ([`HttpError::is_retryable`]) are status 429 and 5xx, and
//!   timeouts: the host's (`DNS-timeout`, `connection-timeout`,
//!   `connection-read-timeout`, `connection-write-timeout`,
//!   `HTTP-response-timeout`) and the request's own [`Request::timeout`].
//!   Nothing else is: a denied host, a refused or broken connection, a
//!   failed TLS handshake or proxy, an invalid request, an answer larger
//!   than the host allows. An [`HttpError`] turned into an [`Error`] with
//!   `?` is [`Error::Retryable`] when retryable and [`Error::Failed`]
//!   otherwise.
//! - **timeout** ([`Request::timeout`]) bounds the whole exchange, from
//!   connecting to the last byte of the body.
//! - **retries**: a request safe to repeat is repeated when the service
//!   throttles it or is unavailable (429, 502, 503, 504) or the connection
//!   failed before anything was sent, after `Retry-After` or a jittered
//!   exponential backoff, within the call's deadline: see [`crate::retry`].
//!   [`Request::retry`] tunes it, [`Request::no_retry`] turns it off, and
//!   [`Request::idempotent`] lets a POST be repeated.
//!
//! A failure's message names the URL (without its query) and the wasi:http
//! `error-code` by its WIT case name, with its payload
//! (`connection-refused`, `DNS-error (rcode NXDOMAIN, info-code 3)`); the
//! host's description in an `internal-error` (why a TLS handshake or a
//! proxy failed, naming the host) is shown as the host wrote it:
//! `cannot reach https://api.example.com/x: TLS handshake with
//! api.example.com:443 failed: the certificate is not trusted (unknown
//! issuer)`.

use std::{fmt, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use wasip2::{
    http::{
        outgoing_handler,
        types::{self as wasi, ErrorCode},
    },
    io::{
        poll::Pollable,
        streams::{InputStream, OutputStream, StreamError},
    },
};
use wstd::{
    future::FutureExt as _,
    http::{Method, Uri},
    runtime::AsyncPollable,
};

pub use crate::retry::Retry;
use crate::{
    __private::bindings::flyte::connector::{call, http_retries},
    Error, retry,
};

/// Headers whose values never appear in `Debug` output or error messages.
const SENSITIVE_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
];

/// Longest response body quoted in an [`HttpError::Status`].
const QUOTED_BODY: usize = 1024;

/// Most bytes asked of a body stream in one read or write.
const CHUNK: u64 = 64 * 1024;

/// The failure of a response body whose stream broke without saying why.
const BODY_BROKE: &str = "the connection broke while reading the answer";

/// A request with method `method` (`"GET"`, `"POST"`, ...) to `url`.
pub fn request(method: &str, url: impl Into<String>) -> Request {
    Request {
        method: method.to_ascii_uppercase(),
        url: url.into(),
        headers: Vec::new(),
        retry: Retry::default(),
        idempotent: false,
        body: Vec::new(),
        timeout: None,
    }
}

/// A GET request to `url`.
pub fn get(url: impl Into<String>) -> Request {
    request("GET", url)
}

/// A POST request to `url`.
pub fn post(url: impl Into<String>) -> Request {
    request("POST", url)
}

/// A PUT request to `url`.
pub fn put(url: impl Into<String>) -> Request {
    request("PUT", url)
}

/// A PATCH request to `url`.
pub fn patch(url: impl Into<String>) -> Request {
    request("PATCH", url)
}

/// A DELETE request to `url`.
pub fn delete(url: impl Into<String>) -> Request {
    request("DELETE", url)
}

/// Percent-encodes `text` for one URL path segment or query value: every
/// byte but ASCII letters, digits and `-._~` becomes `%XX`, so ids from a
/// resource meta cannot change the URL's shape.
///
/// ```
/// use flyte_connector_sdk::http::encode_component;
///
/// assert_eq!(encode_component("example.com:proj"), "example.com%3Aproj");
/// assert_eq!(encode_component("../x?y"), "..%2Fx%3Fy");
/// ```
pub fn encode_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// An HTTP request being built. Its `Debug` output hides credentials.
#[derive(Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    retry: Retry,
    idempotent: bool,
}

impl Request {
    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Bearer TOKEN`.
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// Sets the body to `value` as JSON, with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, Error> {
        self.body = serde_json::to_vec(value).map_err(|err| {
            Error::Failed(format!("cannot encode the body of {self} as JSON: {err}"))
        })?;
        Ok(self.header("content-type", "application/json"))
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Bounds the whole exchange: connecting, sending, waiting for the
    /// answer and reading its body to the last byte, or the request fails
    /// with [`HttpError::Timeout`] (retryable). The host's connect,
    /// first-byte and between-bytes timeouts are set no longer than
    /// `timeout`; without it, only the host's own limits apply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets how the request is repeated when throttled or unavailable
    /// (see [`crate::retry`]); [`Retry::default`] unless set.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Never repeats the request: the first attempt's answer is the
    /// request's.
    pub fn no_retry(self) -> Self {
        self.retry(Retry::none())
    }

    /// Marks the request safe to repeat whatever its method: a POST the
    /// service deduplicates (by a request id or an idempotency token it
    /// carries), which is then retried as a GET is.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Sends the request and reads the whole response, repeating it as
    /// [`crate::retry`] says. A response with an error status is still a
    /// response: see [`Response::error_for_status`].
    pub fn send(self) -> Result<Response, HttpError> {
        let shown = Shown::of(&self.method, &self.url);
        let repeatable = retry::repeatable(&self.method, self.idempotent);
        let reserve = time_left().map_or(Duration::ZERO, retry::reserve);
        let mut attempt = 0;
        loop {
            let outcome = self.attempt(&shown, reserve);
            let (reason, asked) = match &outcome {
                Ok(response) if retry::retried_status(response.status) => (
                    response.status.to_string(),
                    response
                        .header("retry-after")
                        .and_then(|value| retry::retry_after(value, wall_clock_seconds())),
                ),
                Err(Failure {
                    case: Some(case), ..
                }) if retry::retried_code(case) => ((*case).to_owned(), None),
                _ => return outcome.map_err(|failure| failure.error),
            };
            if !repeatable || attempt >= self.retry.retries() {
                return outcome.map_err(|failure| failure.error);
            }
            attempt += 1;
            let wait = asked.unwrap_or_else(|| {
                self.retry
                    .wait(attempt, wasip2::random::random::get_random_u64())
            });
            let in_time =
                time_left().is_none_or(|left| wait + retry::MIN_ATTEMPT + reserve <= left);
            if !in_time || !take_call_retry() {
                return outcome.map_err(|failure| failure.error);
            }
            http_retries::retrying(&shown.origin(), attempt, &reason);
            // The timer is made inside the runtime, which it registers with.
            wstd::runtime::block_on(async {
                wstd::task::sleep(wstd::time::Duration::from(wait)).await;
            });
        }
    }

    /// One attempt, its timeout ending `reserve` before the call's deadline.
    fn attempt(&self, shown: &Shown, reserve: Duration) -> Result<Response, Failure> {
        let request = self.outgoing(shown).map_err(Failure::from)?;
        let timeout = match (self.timeout, time_left()) {
            (timeout, None) => timeout,
            (None, Some(left)) => Some(left.saturating_sub(reserve)),
            (Some(timeout), Some(left)) => Some(timeout.min(left.saturating_sub(reserve))),
        };
        // The host's own timeouts, none longer than the whole: a stalled
        // connect or body then fails with the host's error code, which names
        // the stage. The deadline below bounds the sum.
        let options = timeout.map(host_timeouts);
        let answer = wstd::runtime::block_on(async {
            let exchange = exchange(request, options, &self.body);
            match timeout {
                Some(timeout) => exchange
                    .timeout(wstd::time::Duration::from(timeout))
                    .await
                    .map_err(|_| deadline_passed(shown, timeout)),
                None => Ok(exchange.await),
            }
        })
        .map_err(Failure::from)?;
        let (status, headers, body) = answer.map_err(|err| Failure {
            case: err
                .chain()
                .find_map(|cause| cause.downcast_ref::<ErrorCode>())
                .map(case_name),
            error: classify(&err, shown),
        })?;
        Ok(Response {
            method: shown.method.clone(),
            url: shown.url.clone(),
            status,
            headers,
            body,
        })
    }

    /// The request as wasi:http takes it; what the host refuses in its
    /// method, URL or headers is an [`HttpError::Invalid`].
    fn outgoing(&self, shown: &Shown) -> Result<wasi::OutgoingRequest, HttpError> {
        let invalid = |message: String| HttpError::Invalid {
            message: format!("{shown}: {message}"),
        };
        Method::from_bytes(self.method.as_bytes())
            .map_err(|err| invalid(format!("invalid method: {err}")))?;
        let uri = Uri::try_from(self.url.as_str()).map_err(|err| invalid(err.to_string()))?;
        let mut entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone().into_bytes()))
            .collect();
        // A body of known length, even an empty one, so the request goes out
        // with `content-length` rather than chunked, as HTTP APIs expect.
        if !self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        {
            entries.push((
                "content-length".to_owned(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        let fields = wasi::Fields::from_list(&entries).map_err(|err| {
            invalid(format!(
                "a header is not allowed ({})",
                header_error_text(&err)
            ))
        })?;
        let request = wasi::OutgoingRequest::new(fields);
        let scheme = match uri.scheme_str() {
            Some("http") => wasi::Scheme::Http,
            Some("https") | None => wasi::Scheme::Https,
            Some(other) => wasi::Scheme::Other(other.to_owned()),
        };
        let path = uri.path_and_query().map_or("/", |path| path.as_str());
        request
            .set_method(&wasi_method(&self.method))
            .and_then(|()| request.set_scheme(Some(&scheme)))
            .and_then(|()| request.set_authority(uri.authority().map(|a| a.as_str())))
            .and_then(|()| request.set_path_with_query(Some(path)))
            .map_err(|()| invalid("the method or URL is malformed".to_owned()))?;
        Ok(request)
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Shown::of(&self.method, &self.url).fmt(f)
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &shown_url(&self.url))
            .field("headers", &shown_headers(&self.headers))
            .field("body_bytes", &self.body.len())
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

/// An attempt's failure: the error, and the wasi:http error code's case
/// name when the host gave one (what [`retry`] judges).
struct Failure {
    error: HttpError,
    case: Option<&'static str>,
}

impl From<HttpError> for Failure {
    fn from(error: HttpError) -> Self {
        Self { error, case: None }
    }
}

/// The time left before the call's deadline; `None` when it has none.
fn time_left() -> Option<Duration> {
    match call::time_left() {
        u64::MAX => None,
        nanos => Some(Duration::from_nanos(nanos)),
    }
}

/// The wall clock, in seconds since the Unix epoch (for HTTP dates).
fn wall_clock_seconds() -> u64 {
    wasip2::clocks::wall_clock::now().seconds
}

thread_local! {
    /// Retries the running call has made, across its requests.
    static CALL_RETRIES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Starts a call's retry budget afresh: an instance may serve several calls.
pub(crate) fn begin_call() {
    CALL_RETRIES.with(|retries| retries.set(0));
}

/// Takes one retry of the call's budget ([`retry::CALL_BUDGET`]), if any
/// is left.
fn take_call_retry() -> bool {
    CALL_RETRIES.with(|retries| {
        let made = retries.get();
        retries.set(made.saturating_add(1));
        made < retry::CALL_BUDGET
    })
}

/// What an exchange gives back: status, headers and the whole body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One exchange over wasi:http: sends `request` with `body`, then reads the
/// answer to its last byte. Every wait is on [`wstd`]'s reactor, so the
/// caller's deadline can cut in anywhere; a child resource (stream,
/// pollable) is always declared after its parent (body, future), so it is
/// dropped first however the exchange ends, as wasi requires. Failures
/// carry the wasi:http error code when the host gave one, wherever it came
/// from (the request, its response or either body's stream), for
/// [`classify`].
async fn exchange(
    request: wasi::OutgoingRequest,
    options: Option<wasi::RequestOptions>,
    body: &[u8],
) -> Result<Answer, wstd::http::Error> {
    let outgoing_body = request
        .body()
        .map_err(|()| wstd::http::Error::msg("the request body was taken"))?;
    let pending = outgoing_handler::handle(request, options)?;
    let sent = send_body(outgoing_body, body).await;
    ready(pending.subscribe()).await;
    let Some(Ok(answer)) = pending.get() else {
        return Err(wstd::http::Error::msg("the response was lost"));
    };
    let response = match (answer, sent) {
        // A body the host refused (longer or shorter than its
        // `content-length`) names the cause; the response only failed.
        (Err(_), Err(Some(code))) => return Err(code.into()),
        // Else the response says why the request failed (a refused
        // connection breaks the body too), or the server answered anyway.
        (answer, _) => answer?,
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming_body = response
        .consume()
        .map_err(|()| wstd::http::Error::msg("the response body was taken"))?;
    let stream = incoming_body
        .stream()
        .map_err(|()| wstd::http::Error::msg("the response body was taken"))?;
    let contents = read_all(&stream).await?;
    Ok((status, headers, contents))
}

/// Writes `contents` as the request body and finishes it. An empty body is
/// finished without writing: the host may have taken a zero-length request
/// whole, and even an empty write to its closed stream fails. The error
/// is the code the failure carried, if any.
async fn send_body(body: wasi::OutgoingBody, contents: &[u8]) -> Result<(), Option<ErrorCode>> {
    if !contents.is_empty() {
        let stream = body.write().map_err(|()| None)?;
        write_all(&stream, contents).await.map_err(stream_code)?;
    }
    wasi::OutgoingBody::finish(body, None).map_err(Some)
}

/// Writes all of `contents` to `stream`, waiting while the host's buffer
/// is full, and waits for the flush, so nothing is lost when the stream is
/// dropped.
async fn write_all(stream: &OutputStream, mut contents: &[u8]) -> Result<(), StreamError> {
    while !contents.is_empty() {
        let room = usize::try_from(stream.check_write()?.min(CHUNK)).unwrap_or(usize::MAX);
        if room == 0 {
            ready(stream.subscribe()).await;
            continue;
        }
        let (now, rest) = contents.split_at(room.min(contents.len()));
        stream.write(now)?;
        contents = rest;
    }
    stream.flush()?;
    ready(stream.subscribe()).await;
    stream.check_write().map(drop)
}

/// Reads `stream` to its end. The host breaks a response body's stream
/// with the reason as an error code: `HTTP-response-body-size` when a body
/// without `content-length` passes the cap, `connection-read-timeout` when
/// the between-bytes timeout passes. That code is kept ([`stream_failure`]).
async fn read_all(stream: &InputStream) -> Result<Vec<u8>, wstd::http::Error> {
    let mut contents = Vec::new();
    loop {
        match stream.read(CHUNK) {
            Ok(chunk) if chunk.is_empty() => ready(stream.subscribe()).await,
            Ok(chunk) => contents.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(contents),
            Err(failed) => return Err(stream_failure(stream_code(failed))),
        }
    }
}

/// The wasi:http error code a failed stream carries
/// (`wasi:http/types.http-error-code` of its io-error); none when the
/// stream only closed or the host says nothing.
fn stream_code(error: StreamError) -> Option<ErrorCode> {
    match error {
        StreamError::LastOperationFailed(error) => wasi::http_error_code(&error),
        StreamError::Closed => None,
    }
}

/// The failure of a response body whose stream broke with `code`: the code
/// itself, so [`classify`] sorts and names it as it would the same failure
/// of the request (a read timeout is a timeout, retryable); without one,
/// the broken connection.
fn stream_failure(code: Option<ErrorCode>) -> wstd::http::Error {
    match code {
        Some(code) => code.into(),
        None => wstd::http::Error::msg(BODY_BROKE),
    }
}

/// Waits on `pollable` on the reactor. It is dropped when the wait ends or
/// is cut short, so a resource it watches may be dropped after it.
async fn ready(pollable: Pollable) {
    AsyncPollable::new(pollable).wait_for().await;
}

/// Request options setting each of the host's timeouts to `timeout`. A
/// host without one of them refuses it; the request's deadline still
/// bounds the whole.
fn host_timeouts(timeout: Duration) -> wasi::RequestOptions {
    let options = wasi::RequestOptions::new();
    let nanos = Some(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
    let _ = options.set_connect_timeout(nanos);
    let _ = options.set_first_byte_timeout(nanos);
    let _ = options.set_between_bytes_timeout(nanos);
    options
}

/// The wasi:http method for `method` (upper case, a valid token).
fn wasi_method(method: &str) -> wasi::Method {
    match method {
        "GET" => wasi::Method::Get,
        "HEAD" => wasi::Method::Head,
        "POST" => wasi::Method::Post,
        "PUT" => wasi::Method::Put,
        "DELETE" => wasi::Method::Delete,
        "CONNECT" => wasi::Method::Connect,
        "OPTIONS" => wasi::Method::Options,
        "TRACE" => wasi::Method::Trace,
        "PATCH" => wasi::Method::Patch,
        other => wasi::Method::Other(other.to_owned()),
    }
}

/// A wasi:http `header-error` by its WIT case name.
fn header_error_text(error: &wasi::HeaderError) -> &'static str {
    match error {
        wasi::HeaderError::InvalidSyntax => "invalid-syntax",
        wasi::HeaderError::Forbidden => "forbidden",
        wasi::HeaderError::Immutable => "immutable",
    }
}

/// Headers as `Debug` shows them: sensitive values hidden.
fn shown_headers(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str(), redacted(name, value)))
        .collect()
}

fn redacted<'a>(name: &str, value: &'a str) -> &'a str {
    if SENSITIVE_HEADERS
        .iter()
        .any(|sensitive| name.eq_ignore_ascii_case(sensitive))
    {
        "<redacted>"
    } else {
        value
    }
}

/// A URL as messages and logs show it: without its query and fragment,
/// and without `user:password@`, which may all carry credentials.
fn shown_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

/// How a request is named in messages: method and URL without its query.
struct Shown {
    method: String,
    url: String,
}

impl Shown {
    fn of(method: &str, url: &str) -> Self {
        Self {
            method: method.to_owned(),
            url: shown_url(url),
        }
    }

    fn host(&self) -> String {
        let after_scheme = self.url.split("://").nth(1).unwrap_or(&self.url);
        after_scheme
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// `scheme://host[:port]` of the URL (https when it names no scheme),
    /// as the host counts retries by.
    fn origin(&self) -> String {
        let scheme = self
            .url
            .split_once("://")
            .map_or("https", |(scheme, _)| scheme);
        format!("{scheme}://{}", self.host())
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.url)
    }
}

/// Sorts a failure of the wasi:http exchange into what a connector can act
/// on: the kinds `wit/fixtures/http.json` gives each error code.
fn classify(error: &wstd::http::Error, shown: &Shown) -> HttpError {
    let message = described(error);
    let code = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<ErrorCode>());
    match code {
        Some(ErrorCode::HttpRequestDenied) => HttpError::Denied { host: shown.host() },
        Some(
            ErrorCode::DnsTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout,
        ) => HttpError::Timeout {
            url: shown.url.clone(),
            message,
        },
        Some(ErrorCode::HttpResponseBodySize(limit)) => HttpError::Connection {
            url: shown.url.clone(),
            message: match limit {
                Some(limit) => format!(
                    "the response is larger than the host allows ({limit} bytes; max_response_mb \
                     in the connector's manifest)"
                ),
                None => "the response is larger than the host allows (max_response_mb in the \
                         connector's manifest)"
                    .to_owned(),
            },
        },
        Some(ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid) => {
            HttpError::Invalid {
                message: format!("{shown}: {message}"),
            }
        }
        _ => HttpError::Connection {
            url: shown.url.clone(),
            message,
        },
    }
}

/// The failure as a message shows it: each cause in turn, a wasi:http error
/// code as [`code_text`] writes it rather than as its `Debug` form.
fn described(error: &wstd::http::Error) -> String {
    let causes: Vec<String> = error
        .chain()
        .map(|cause| match cause.downcast_ref::<ErrorCode>() {
            Some(code) => code_text(code),
            None => cause.to_string(),
        })
        .collect();
    causes.join(": ")
}

/// A wasi:http error code as messages show it (the Python SDK writes the
/// same): its WIT case name, then its payload's parts in parentheses
/// (`DNS-error (rcode NXDOMAIN, info-code 3)`, `HTTP-request-body-size
/// (1024)`); `internal-error` with a payload is the host's text alone, as
/// the host wrote it (a refused TLS handshake, a proxy that said no).
fn code_text(code: &ErrorCode) -> String {
    let parts: Vec<String> = match code {
        ErrorCode::InternalError(Some(text)) => return text.clone(),
        ErrorCode::DnsError(payload) => fields([
            ("rcode", payload.rcode.clone()),
            ("info-code", payload.info_code.map(|code| code.to_string())),
        ]),
        ErrorCode::TlsAlertReceived(payload) => fields([
            ("alert-id", payload.alert_id.map(|id| id.to_string())),
            ("alert-message", payload.alert_message.clone()),
        ]),
        ErrorCode::HttpRequestBodySize(size) | ErrorCode::HttpResponseBodySize(size) => {
            size.iter().map(u64::to_string).collect()
        }
        ErrorCode::HttpRequestHeaderSectionSize(size)
        | ErrorCode::HttpRequestTrailerSectionSize(size)
        | ErrorCode::HttpResponseHeaderSectionSize(size)
        | ErrorCode::HttpResponseTrailerSectionSize(size) => {
            size.iter().map(u32::to_string).collect()
        }
        ErrorCode::HttpRequestHeaderSize(Some(field))
        | ErrorCode::HttpRequestTrailerSize(field)
        | ErrorCode::HttpResponseHeaderSize(field)
        | ErrorCode::HttpResponseTrailerSize(field) => fields([
            ("field-name", field.field_name.clone()),
            ("field-size", field.field_size.map(|size| size.to_string())),
        ]),
        ErrorCode::HttpResponseTransferCoding(coding)
        | ErrorCode::HttpResponseContentCoding(coding) => coding.iter().cloned().collect(),
        _ => Vec::new(),
    };
    let name = case_name(code);
    if parts.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({})", parts.join(", "))
    }
}

/// The present fields of a payload record, each as `name value`.
fn fields<const N: usize>(fields: [(&str, Option<String>); N]) -> Vec<String> {
    fields
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| format!("{name} {value}")))
        .collect()
}

/// The WIT name of `code`'s case (`wasi:http/types` `error-code`).
fn case_name(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::DnsTimeout => "DNS-timeout",
        ErrorCode::DnsError(_) => "DNS-error",
        ErrorCode::DestinationNotFound => "destination-not-found",
        ErrorCode::DestinationUnavailable => "destination-unavailable",
        ErrorCode::DestinationIpProhibited => "destination-IP-prohibited",
        ErrorCode::DestinationIpUnroutable => "destination-IP-unroutable",
        ErrorCode::ConnectionRefused => "connection-refused",
        ErrorCode::ConnectionTerminated => "connection-terminated",
        ErrorCode::ConnectionTimeout => "connection-timeout",
        ErrorCode::ConnectionReadTimeout => "connection-read-timeout",
        ErrorCode::ConnectionWriteTimeout => "connection-write-timeout",
        ErrorCode::ConnectionLimitReached => "connection-limit-reached",
        ErrorCode::TlsProtocolError => "TLS-protocol-error",
        ErrorCode::TlsCertificateError => "TLS-certificate-error",
        ErrorCode::TlsAlertReceived(_) => "TLS-alert-received",
        ErrorCode::HttpRequestDenied => "HTTP-request-denied",
        ErrorCode::HttpRequestLengthRequired => "HTTP-request-length-required",
        ErrorCode::HttpRequestBodySize(_) => "HTTP-request-body-size",
        ErrorCode::HttpRequestMethodInvalid => "HTTP-request-method-invalid",
        ErrorCode::HttpRequestUriInvalid => "HTTP-request-URI-invalid",
        ErrorCode::HttpRequestUriTooLong => "HTTP-request-URI-too-long",
        ErrorCode::HttpRequestHeaderSectionSize(_) => "HTTP-request-header-section-size",
        ErrorCode::HttpRequestHeaderSize(_) => "HTTP-request-header-size",
        ErrorCode::HttpRequestTrailerSectionSize(_) => "HTTP-request-trailer-section-size",
        ErrorCode::HttpRequestTrailerSize(_) => "HTTP-request-trailer-size",
        ErrorCode::HttpResponseIncomplete => "HTTP-response-incomplete",
        ErrorCode::HttpResponseHeaderSectionSize(_) => "HTTP-response-header-section-size",
        ErrorCode::HttpResponseHeaderSize(_) => "HTTP-response-header-size",
        ErrorCode::HttpResponseBodySize(_) => "HTTP-response-body-size",
        ErrorCode::HttpResponseTrailerSectionSize(_) => "HTTP-response-trailer-section-size",
        ErrorCode::HttpResponseTrailerSize(_) => "HTTP-response-trailer-size",
        ErrorCode::HttpResponseTransferCoding(_) => "HTTP-response-transfer-coding",
        ErrorCode::HttpResponseContentCoding(_) => "HTTP-response-content-coding",
        ErrorCode::HttpResponseTimeout => "HTTP-response-timeout",
        ErrorCode::HttpUpgradeFailed => "HTTP-upgrade-failed",
        ErrorCode::HttpProtocolError => "HTTP-protocol-error",
        ErrorCode::LoopDetected => "loop-detected",
        ErrorCode::ConfigurationError => "configuration-error",
        ErrorCode::InternalError(_) => "internal-error",
    }
}

/// The error of a request whose [`Request::timeout`] passed before its
/// answer was read in full.
fn deadline_passed(shown: &Shown, timeout: Duration) -> HttpError {
    HttpError::Timeout {
        url: shown.url.clone(),
        message: format!("no complete answer within {timeout:?}"),
    }
}

/// What [`Request::send`] makes of `code` for the request `method url`;
/// the fixture tests reach it through `__private`.
pub(crate) fn classify_code(code: ErrorCode, method: &str, url: &str) -> HttpError {
    classify(&wstd::http::Error::from(code), &Shown::of(method, url))
}

/// What [`Request::send`] makes of a response body whose stream broke
/// carrying `code` (none: the host said nothing), for the request `method
/// url`; the fixture tests reach it through `__private`.
pub(crate) fn classify_body_failure(code: Option<ErrorCode>, method: &str, url: &str) -> HttpError {
    classify(&stream_failure(code), &Shown::of(method, url))
}

/// What [`Request::send`] fails with when `timeout` passes first.
pub(crate) fn deadline_error(method: &str, url: &str, timeout: Duration) -> HttpError {
    deadline_passed(&Shown::of(method, url), timeout)
}

/// A response, read in full.
#[derive(Clone)]
pub struct Response {
    method: String,
    url: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is below 400: 1xx, 2xx and 3xx are answers
    /// (wasi:http does not follow redirects), 4xx and 5xx are errors. The
    /// same test as [`Response::error_for_status`].
    pub fn is_ok(&self) -> bool {
        self.status < 400
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taken.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as text ([`Error::Failed`] when it is not UTF-8).
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body).map_err(|err| {
            Error::Failed(format!(
                "the answer to {} {} is not UTF-8 text: {err}",
                self.method, self.url
            ))
        })
    }

    /// The body read as JSON into `T` ([`Error::Failed`] naming the request
    /// when it does not fit).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|err| {
            Error::Failed(format!(
                "cannot read the answer to {} {} as {}: {err}",
                self.method,
                self.url,
                std::any::type_name::<T>()
            ))
        })
    }

    /// The response itself when its status is below 400, else
    /// [`HttpError::Status`] with the status and (the start of) the body.
    pub fn error_for_status(self) -> Result<Self, HttpError> {
        if self.is_ok() {
            return Ok(self);
        }
        let mut body = String::from_utf8_lossy(&self.body).into_owned();
        if body.len() > QUOTED_BODY {
            let mut end = QUOTED_BODY;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
            body.push('…');
        }
        Err(HttpError::Status {
            method: self.method,
            url: self.url,
            status: self.status,
            body,
        })
    }
}

/// A response as [`Request::send`] makes it; the fixture tests reach it
/// through `__private`.
pub(crate) fn response(method: &str, url: &str, status: u16, body: Vec<u8>) -> Response {
    Response {
        method: method.to_owned(),
        url: shown_url(url),
        status,
        headers: Vec::new(),
        body,
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("request", &format_args!("{} {}", self.method, self.url))
            .field("status", &self.status)
            .field("headers", &shown_headers(&self.headers))
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Why an HTTP request did not get a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The host's policy does not allow this host (`HTTP-request-denied`):
    /// the connector's manifest must list it in `allowed_hosts`. Not
    /// retryable.
    Denied {
        /// The host (and port, if the URL gave one) that was refused.
        host: String,
    },
    /// The host could not be resolved or reached, its TLS handshake or the
    /// proxy failed, the connection broke, or the answer was larger than
    /// the host allows: every error code not sorted elsewhere. Not
    /// retryable.
    Connection {
        /// The URL, without its query.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The request's [`Request::timeout`] passed before the answer was
    /// read in full, or one of the host's timeouts did (DNS, connect,
    /// first byte, between bytes). Retryable.
    Timeout {
        /// The URL, without its query.
        url: String,
        /// What timed out.
        message: String,
    },
    /// The service answered with an error status (400 or more);
    /// retryable when it is 429 or 5xx.
    Status {
        /// The request's method.
        method: String,
        /// The URL, without its query.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The request could not be built, or the host refused its URL or
    /// method (`HTTP-request-URI-invalid`, `HTTP-request-method-invalid`).
    /// Not retryable.
    Invalid {
        /// What is wrong.
        message: String,
    },
}

impl HttpError {
    /// Whether trying again later may succeed: HTTP 429 and 5xx, and timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Timeout { .. } => true,
            Self::Denied { .. } | Self::Connection { .. } | Self::Invalid { .. } => false,
        }
    }

    /// The status code, for [`HttpError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied { host } => write!(
                f,
                "outbound HTTP to {host} is denied by the host's policy: allow it in the \
                 connector's manifest (allowed_hosts)"
            ),
            Self::Connection { url, message } => write!(f, "cannot reach {url}: {message}"),
            Self::Timeout { url, message } => write!(f, "{url} timed out: {message}"),
            Self::Status {
                method,
                url,
                status,
                body,
            } => write!(f, "{method} {url} answered {status}: {body}"),
            Self::Invalid { message } => write!(f, "invalid request {message}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// An HTTP failure is the connector's failure, retryable when a retry may
/// succeed.
impl From<HttpError> for Error {
    fn from(error: HttpError) -> Self {
        if error.is_retryable() {
            Error::Retryable(error.to_string())
        } else {
            Error::Failed(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials_and_queries() {
        let request = post("https://api.example.com/submit?token=abc")
            .bearer_auth("s3cr3t")
            .header("X-Api-Key", "k3y")
            .header("accept", "application/json");
        let shown = format!("{request:?}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("k3y") && !shown.contains("abc"));
        assert!(shown.contains("application/json"), "{shown}");
        assert_eq!(request.to_string(), "POST https://api.example.com/submit");
    }

    #[test]
    fn statuses_429_and_5xx_and_timeouts_are_retryable() {
        let status = |status| HttpError::Status {
            method: "GET".into(),
            url: "https://x".into(),
            status,
            body: String::new(),
        };
        assert!(status(429).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(401).is_retryable());
        let timeout = HttpError::Timeout {
            url: "https://x".into(),
            message: "slow".into(),
        };
        assert!(matches!(Error::from(timeout), Error::Retryable(_)));
        let denied = HttpError::Denied {
            host: "evil.example.com".into(),
        };
        let error = Error::from(denied);
        assert!(matches!(&error, Error::Failed(m) if m.contains("evil.example.com")));
    }

    #[test]
    fn error_statuses_quote_the_start_of_the_body() {
        let response = Response {
            method: "GET".into(),
            url: "https://x/y".into(),
            status: 500,
            headers: Vec::new(),
            body: "é".repeat(1000).into_bytes(),
        };
        let error = response.error_for_status().expect_err("500");
        let HttpError::Status { body, .. } = &error else {
            panic!("{error:?}")
        };
        assert!(body.len() <= QUOTED_BODY + '…'.len_utf8());
        assert!(
            error
                .to_string()
                .starts_with("GET https://x/y answered 500: éé")
        );
    }

    #[test]
    fn hosts_come_from_the_url_without_credentials() {
        assert_eq!(
            Shown::of("GET", "https://u:p@h.example.com:8443/a?b").host(),
            "h.example.com:8443"
        );
        assert_eq!(Shown::of("GET", "http://127.0.0.1/").host(), "127.0.0.1");
    }

    #[test]
    fn shown_urls_never_carry_credentials() {
        for (url, shown) in [
            (
                "https://user:secret@h.example.com:8443/a/b?token=t#f",
                "https://h.example.com:8443/a/b",
            ),
            ("https://secret@h.example.com", "https://h.example.com"),
            ("http://h.example.com/p@q", "http://h.example.com/p@q"),
            ("user:secret@h.example.com/x", "h.example.com/x"),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
        let request = get("https://user:secret@h.example.com/x?k=v");
        for text in [request.to_string(), format!("{request:?}")] {
            assert!(!text.contains("secret"), "{text}");
            assert!(!text.contains("user"), "{text}");
            assert!(text.contains("h.example.com/x"), "{text}");
        }
    }
}
