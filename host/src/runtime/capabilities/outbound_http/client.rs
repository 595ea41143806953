//! A plugin's pooled keep-alive client (hyper-util's): idle connections are
//! kept per target and reused by the plugin's later calls, HTTP/2 where the
//! service chose it by ALPN, HTTP/1.1 otherwise.
//!
//! What a plugin keeps open is bounded, whatever hosts its guests call: a
//! target is its scheme, host and port written one way (lower case, no
//! trailing dot, the default port left out), so `H.`, `h` and `h:443` are
//! one target; connections are pooled for at most [`MAX_POOLED_TARGETS`]
//! targets, each keeping at most [`POOL_MAX_IDLE_PER_TARGET`] idle, and a
//! call to another target closes the idle connections of the one least
//! recently used. Requests in flight finish on their connections, which
//! then close.
//!
//! A pooled connection the far side closed is noticed by the pool (its
//! connection task sees the close) and dropped; one that fails as a request
//! is handed to it, before any of the request was written, is retried once
//! on a fresh connection (`retry_canceled_requests`). Idle connections close
//! after [`POOL_IDLE_TIMEOUT`], shorter than the idle timeouts of the load
//! balancers in front of these services (AWS ALB 60 s, nginx 75 s), so the
//! pool rarely holds one the far side is closing.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{
    HeaderValue, Method, Request, Response, Uri,
    header::{CONTENT_LENGTH, HOST, PROXY_AUTHORIZATION, TRANSFER_ENCODING},
};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};
use tokio::time::Instant;
use wasmtime_wasi_http::{Error, WasiBody};

use super::{
    Target, Timeouts,
    connect::{ConnectError, ConnectProgress, Connector, Progress, REQUEST, RequestScope},
    proxy::{ProxySettings, Route},
    trust::{describe_tls_error, find_tls_error},
};

/// How long an idle connection stays in the pool.
pub(super) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per target.
pub(super) const POOL_MAX_IDLE_PER_TARGET: usize = 64;
/// Targets one plugin keeps connections pooled for.
pub(super) const MAX_POOLED_TARGETS: usize = 8;

/// The labels and timeouts of one request.
pub(super) struct Exchange {
    pub(super) target: Target,
    pub(super) timeouts: Timeouts,
    pub(super) connector: Arc<str>,
    pub(super) host_label: String,
    pub(super) shown: String,
}

/// One plugin's client. Cheap to clone: clones share the pools.
#[derive(Clone)]
pub(super) struct PooledClient(Arc<Shared>);

struct Shared {
    connector: Connector,
    proxy: Arc<ProxySettings>,
    pools: Mutex<Pools>,
}

/// The pools of the targets most recently called, least recently used first.
#[derive(Default)]
struct Pools(Vec<(Target, Client<Connector, WasiBody>)>);

impl std::fmt::Debug for PooledClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledClient").finish_non_exhaustive()
    }
}

impl PooledClient {
    pub(super) fn new(connector: Connector, proxy: Arc<ProxySettings>) -> Self {
        Self(Arc::new(Shared {
            connector,
            proxy,
            pools: Mutex::default(),
        }))
    }

    /// The pool of `target`, made the most recently used; a new one closes
    /// the least recently used past [`MAX_POOLED_TARGETS`].
    fn pool(&self, target: &Target) -> Client<Connector, WasiBody> {
        let mut pools = self.0.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let client = match pools.0.iter().position(|(pooled, _)| pooled == target) {
            Some(index) => pools.0.remove(index).1,
            None => Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_max_idle_per_host(POOL_MAX_IDLE_PER_TARGET)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .retry_canceled_requests(true)
                .set_host(true)
                .build(self.0.connector.clone()),
        };
        pools.0.push((target.clone(), client.clone()));
        let evicted = pools.0.len().saturating_sub(MAX_POOLED_TARGETS);
        // Dropped once the lock is released: their idle connections close.
        let _closed: Vec<_> = pools.0.drain(..evicted).collect();
        drop(pools);
        client
    }

    /// Sends `request` (its URI absolute) and gives the response once its
    /// head is in, its body bounded by the between-bytes timeout.
    pub(super) async fn send(
        &self,
        request: Request<WasiBody>,
        exchange: Exchange,
    ) -> Result<Response<WasiBody>, Error> {
        let target = &exchange.target;
        let authority = target.authority();
        let progress = Arc::new(ConnectProgress::default());
        let scope = RequestScope {
            connect_timeout: exchange.timeouts.connect,
            connector: exchange.connector,
            host_label: exchange.host_label,
            shown: exchange.shown,
            progress: Arc::clone(&progress),
        };
        let (request, reach) = with_canonical_uri(request, target)?;
        let request = self.for_route(request, target, &reach, &scope).await?;
        let request = settle_empty_body(request).await;
        let client = self.pool(target);
        let pending = REQUEST.scope(scope, client.request(request));
        let response = within_first_byte(
            pending,
            exchange.timeouts.first_byte,
            exchange.timeouts.connect,
            &progress,
        )
        .await?
        .map_err(|err| {
            let error = request_error(&err, &authority);
            let fresh_tls = target.https && matches!(progress.get(), Progress::Connected(_));
            let broken = match &error {
                Error::ConnectionTerminated => Some("connection terminated".to_owned()),
                Error::InternalError(Some(text)) if !text.starts_with("TLS") => Some(text.clone()),
                _ => None,
            };
            match broken {
                // A TLS 1.3 server that wants a client certificate it did
                // not get closes the connection once the handshake is done;
                // the request then finds it closed, reset or broken.
                Some(detail) if fresh_tls => Error::InternalError(Some(format!(
                    "{authority} closed a new TLS connection before answering ({detail}), as \
                     a server that requires a client certificate does: set client_cert_file \
                     and client_key_file in the manifest's [[http.tls]]"
                ))),
                _ => error,
            }
        })?;
        let between_bytes = exchange.timeouts.between_bytes.max(Duration::from_nanos(1));
        Ok(response.map(|incoming| {
            BetweenBytes {
                incoming,
                authority,
                limit: between_bytes,
                deadline: Box::pin(tokio::time::sleep(between_bytes)),
            }
            .boxed_unsync()
        }))
    }
}

impl PooledClient {
    /// `request` to `target` (`reach`) as its route wants it. A plain-http
    /// request through a proxy goes to the proxy itself, in absolute form:
    /// it carries the proxy's credentials and, for a target judged by its
    /// address, the address judged here, so the proxy cannot resolve the
    /// name anew.
    async fn for_route(
        &self,
        mut request: Request<WasiBody>,
        target: &Target,
        reach: &str,
        scope: &RequestScope,
    ) -> Result<Request<WasiBody>, Error> {
        if target.https {
            return Ok(request);
        }
        let Route::Proxy(proxy) = self.0.proxy.route("http", &target.host, target.port) else {
            return Ok(request);
        };
        if let Some(authorization) = &proxy.authorization {
            request
                .headers_mut()
                .insert(PROXY_AUTHORIZATION, authorization.clone());
        }
        if self.0.connector.checks(target) {
            let addresses = self
                .0
                .connector
                .resolve(target, Some(scope))
                .await
                .map_err(|err| err.to_wasi())?;
            if let Some(address) = addresses.first() {
                request = pinned(request, reach, address)?;
            }
        }
        Ok(request)
    }
}

/// `request` with its URI written the one way its target's pool knows it,
/// and that authority (`host` or `host:port`, the default port left out).
fn with_canonical_uri(
    request: Request<WasiBody>,
    target: &Target,
) -> Result<(Request<WasiBody>, String), Error> {
    let default_port = if target.https { 443 } else { 80 };
    let reach = match (target.port == default_port, target.host.contains(':')) {
        (true, true) => format!("[{}]", target.host),
        (true, false) => target.host.clone(),
        (false, _) => target.authority(),
    };
    let request = with_authority(request, target.scheme(), &reach)?;
    Ok((request, reach))
}

/// `request` sent to `address` in place of its host, which its `Host`
/// header (`reach`) keeps naming.
fn pinned(
    mut request: Request<WasiBody>,
    reach: &str,
    address: &std::net::SocketAddr,
) -> Result<Request<WasiBody>, Error> {
    let host = HeaderValue::from_str(reach).map_err(|_| Error::HttpRequestUriInvalid)?;
    request.headers_mut().insert(HOST, host);
    with_authority(request, "http", &address.to_string())
}

/// `request` with its URI's scheme and authority replaced.
fn with_authority(
    request: Request<WasiBody>,
    scheme: &str,
    authority: &str,
) -> Result<Request<WasiBody>, Error> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    parts.uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    Ok(Request::from_parts(parts, body))
}

/// Waits for `pending`, failing once `first_byte` passed since the request
/// had its connection: a pooled one at once, a new one when it was made
/// (whose making its own `connect` timeout bounds).
async fn within_first_byte<F: Future>(
    pending: F,
    first_byte: Duration,
    connect: Duration,
    progress: &ConnectProgress,
) -> Result<F::Output, Error> {
    let started = Instant::now();
    let deadline = || match progress.get() {
        Progress::Pooled => started + first_byte,
        Progress::Connecting(since) => since + connect + first_byte,
        Progress::Connected(at) => at + first_byte,
    };
    let mut pending = std::pin::pin!(pending);
    loop {
        let at = deadline();
        tokio::select! {
            answer = &mut pending => return Ok(answer),
            () = tokio::time::sleep_until(at) => {
                if deadline() <= Instant::now() {
                    return Err(Error::ConnectionReadTimeout);
                }
            }
        }
    }
}

/// The wasi:http error of a request to `authority` that got no response.
fn request_error(error: &hyper_util::client::legacy::Error, authority: &str) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            return connect.to_wasi();
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            return hyper_error(hyper, authority);
        }
        source = cause.source();
    }
    Error::InternalError(Some(format!(
        "the exchange with {authority} failed: {}",
        chain(error)
    )))
}

/// The wasi:http error of a failed exchange with `authority` on a
/// connection.
fn hyper_error(error: &hyper::Error, authority: &str) -> Error {
    if let Some(tls) = find_tls_error(error) {
        // TLS 1.3 servers refuse a client certificate after the handshake,
        // so the refusal shows when the answer is read.
        let (_, text) = describe_tls_error(tls);
        Error::InternalError(Some(format!("TLS with {authority} failed: {text}")))
    } else if error.is_timeout() {
        Error::ConnectionReadTimeout
    } else if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        Error::ConnectionTerminated
    } else if error.is_parse() || error.is_parse_status() {
        Error::HttpProtocolError
    } else {
        Error::InternalError(Some(format!(
            "the exchange with {authority} failed: {}",
            chain(error)
        )))
    }
}

/// An error and its sources, `: `-separated.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// `request` with its body known to be empty when it is: declared so
/// (`content-length: 0`), or a GET, HEAD, OPTIONS or DELETE declaring none
/// whose guest finished it without a byte. Its headers then end the stream
/// (HTTP/2 `END_STREAM`), where an open body would follow them with an empty
/// DATA frame: a server that answers before that frame arrives resets the
/// stream, and h2 servers count such resets as the client's errors (past
/// 1,024 on one connection, a GOAWAY `ENHANCE_YOUR_CALM` fails the calls in
/// flight on it). Waiting for the guest to finish its body costs nothing: it
/// writes it before it waits for the answer.
async fn settle_empty_body(request: Request<WasiBody>) -> Request<WasiBody> {
    let headers = request.headers();
    let maybe_empty = match headers.get(CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => {
            matches!(
                *request.method(),
                Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
            ) && !headers.contains_key(TRANSFER_ENCODING)
        }
    };
    if !maybe_empty || request.body().is_end_stream() {
        return request;
    }
    let (parts, mut body) = request.into_parts();
    let body = match body.frame().await {
        None => http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
        Some(first) => Prepended {
            first: Some(first),
            rest: body,
        }
        .boxed_unsync(),
    };
    Request::from_parts(parts, body)
}

/// A body whose first frame was read already.
struct Prepended {
    first: Option<Result<Frame<Bytes>, Error>>,
    rest: WasiBody,
}

impl Body for Prepended {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match self.first.take() {
            Some(first) => Poll::Ready(Some(first)),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }
}

/// A response body that fails when the next bytes take longer than `limit`.
struct BetweenBytes {
    incoming: Incoming,
    authority: String,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for BetweenBytes {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + self.limit;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                Poll::Ready(Some(Err(hyper_error(&err, &self.authority))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that yields `frames` one by one, then ends, reporting no end
    /// before it has (as a guest's outgoing body does).
    struct Guest(Vec<Bytes>);

    impl Body for Guest {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            if self.0.is_empty() {
                Poll::Ready(None)
            } else {
                Poll::Ready(Some(Ok(Frame::data(self.0.remove(0)))))
            }
        }
    }

    fn request(method: Method, length: Option<&str>, frames: &[&'static str]) -> Request<WasiBody> {
        let mut builder = Request::builder()
            .method(method)
            .uri("https://api.example.com/x");
        if let Some(length) = length {
            builder = builder.header(CONTENT_LENGTH, length);
        }
        let body = Guest(
            frames
                .iter()
                .map(|f| Bytes::from_static(f.as_bytes()))
                .collect(),
        );
        builder.body(body.boxed_unsync()).expect("a request")
    }

    #[tokio::test]
    async fn empty_bodies_are_known_empty_and_others_arrive_whole() {
        for (method, length) in [
            (Method::GET, None),
            (Method::GET, Some("0")),
            (Method::POST, Some("0")),
            (Method::DELETE, None),
        ] {
            let settled = settle_empty_body(request(method.clone(), length, &[])).await;
            assert!(settled.body().is_end_stream(), "{method} {length:?}");
        }
        for (method, length) in [
            (Method::GET, None),
            (Method::POST, Some("5")),
            (Method::POST, None),
        ] {
            let settled = settle_empty_body(request(method.clone(), length, &["ab", "cde"])).await;
            assert!(!settled.body().is_end_stream(), "{method} {length:?}");
            let body = settled.into_body().collect().await.expect("the body");
            assert_eq!(
                body.to_bytes(),
                Bytes::from_static(b"abcde"),
                "{method} {length:?}"
            );
        }
    }
}
