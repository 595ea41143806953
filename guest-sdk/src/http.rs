//! Outbound HTTP for connectors: a blocking client over
//! `wasi:http/outgoing-handler`, built on [`wstd`].
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
//! (`allowed_hosts`); anything else fails with [`HttpError::Denied`]. An
//! [`HttpError`] turned into an [`Error`] with `?` is
//! [`Error::Retryable`] when a retry may succeed (HTTP 429 and 5xx,
//! timeouts) and [`Error::Failed`] otherwise.

use std::{fmt, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use wstd::{
    future::FutureExt as _,
    http::{Body, Client, ErrorCode, Method},
};

use crate::Error;

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

/// A request with method `method` (`"GET"`, `"POST"`, ...) to `url`.
pub fn request(method: &str, url: impl Into<String>) -> Request {
    Request {
        method: method.to_ascii_uppercase(),
        url: url.into(),
        headers: Vec::new(),
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

    /// Fails the request with [`HttpError::Timeout`] when it has not been
    /// answered in full within `timeout`. The host also bounds every
    /// request (connect, first byte, between bytes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response. A response with an
    /// error status is still a response: see [`Response::error_for_status`].
    pub fn send(self) -> Result<Response, HttpError> {
        let shown = Shown::of(&self.method, &self.url);
        let request = self.build(&shown)?;
        let mut client = Client::new();
        if let Some(timeout) = self.timeout {
            client.set_connect_timeout(timeout);
            client.set_first_byte_timeout(timeout);
        }
        let exchange = async {
            let response = client.send(request).await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = response.into_body();
            let body = body.contents().await?.to_vec();
            Ok::<_, wstd::http::Error>((status, headers, body))
        };
        let answer = wstd::runtime::block_on(async {
            match self.timeout {
                Some(timeout) => exchange
                    .timeout(wstd::time::Duration::from(timeout))
                    .await
                    .map_err(|_| HttpError::Timeout {
                        url: shown.url.clone(),
                        message: format!("no complete answer within {timeout:?}"),
                    }),
                None => Ok(exchange.await),
            }
        })?;
        let (status, headers, body) = answer.map_err(|err| classify(&err, &shown))?;
        Ok(Response {
            method: shown.method,
            url: shown.url,
            status,
            headers,
            body,
        })
    }

    fn build(&self, shown: &Shown) -> Result<wstd::http::Request<Body>, HttpError> {
        let invalid = |message: String| HttpError::Invalid {
            message: format!("{shown}: {message}"),
        };
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|err| invalid(format!("invalid method: {err}")))?;
        let mut builder = wstd::http::Request::builder()
            .method(method)
            .uri(self.url.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        // A body of known length, even an empty one, so the request goes out
        // with `content-length` rather than chunked, as HTTP APIs expect.
        if !self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        {
            builder = builder.header("content-length", self.body.len());
        }
        // An empty body is sent as one that writes nothing: the host may
        // have taken a zero-length request whole before the guest writes,
        // and even an empty write to its closed stream fails.
        let body = if self.body.is_empty() {
            Body::from_http_body(http_body_util::Empty::<bytes::Bytes>::new())
        } else {
            Body::from(self.body.clone())
        };
        builder.body(body).map_err(|err| invalid(err.to_string()))
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
            .finish()
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
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.url)
    }
}

/// Sorts a failure of the wasi:http exchange into what a connector can act on.
fn classify(error: &wstd::http::Error, shown: &Shown) -> HttpError {
    let message = format!("{error:#}");
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
        Some(ErrorCode::HttpResponseBodySize(Some(limit))) => HttpError::Connection {
            url: shown.url.clone(),
            message: format!(
                "the response is larger than the host allows ({limit} bytes; max_response_mb in \
                 the connector's manifest)"
            ),
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

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
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
        if self.status < 400 {
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
    /// The host's policy does not allow this host: the connector's manifest
    /// must list it in `allowed_hosts`.
    Denied {
        /// The host (and port, if the URL gave one) that was refused.
        host: String,
    },
    /// The host could not be resolved or reached, or the connection broke.
    Connection {
        /// The URL, without its query.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Connecting, or waiting for the answer, took too long.
    Timeout {
        /// The URL, without its query.
        url: String,
        /// What timed out.
        message: String,
    },
    /// The service answered with an error status (400 or more).
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
    /// The request could not be built: a malformed URL, method or header.
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
