//! Every outbound request a guest makes goes through [`OutboundPolicy`]
//! before any connection is made (and before anything reaches a proxy):
//!
//! - a URL carrying `user:password@` is refused, so credentials are never
//!   sent in it, pooled under it or logged with it (they belong in a header);
//! - `TRACE` and `CONNECT` are refused: a proxy answers a `TRACE` itself by
//!   echoing the request, which for plain http carries the server's
//!   `Proxy-Authorization`;
//! - the host must be allowed by the plugin's rules (its addresses are
//!   judged when a connection is made, see `address`);
//! - `Max-Forwards` and `Proxy-*` headers a guest set are dropped: only the
//!   server speaks to its proxy;
//! - a call may have [`HttpLimits::max_concurrent_requests`] requests open
//!   (sent and their response bodies not yet done) at once.
//!
//! It is then sent by the plugin's pooled client with the grant's timeouts,
//! its response body capped in size, and counted.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderName, Method};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::metrics::OutboundMetrics;
use super::{
    HttpLimits, Target,
    client::{Exchange, PooledClient},
    labels::{Denial, HostLabels},
};
use crate::runtime::capabilities::egress::HostRule;

struct Shared {
    rules: Arc<[HostRule]>,
    limits: HttpLimits,
    client: PooledClient,
    metrics: OutboundMetrics,
    labels: Arc<HostLabels>,
}

/// One plugin's outbound-HTTP policy and client. Cheap to clone: every call
/// of the plugin shares it, with its pool.
#[derive(Clone)]
pub(super) struct OutboundPolicy(Arc<Shared>);

impl std::fmt::Debug for OutboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundPolicy")
            .field("rules", &self.0.rules)
            .field("limits", &self.0.limits)
            .finish_non_exhaustive()
    }
}

impl OutboundPolicy {
    pub(super) fn new(
        rules: Arc<[HostRule]>,
        limits: HttpLimits,
        client: PooledClient,
        metrics: OutboundMetrics,
        labels: Arc<HostLabels>,
    ) -> Self {
        Self(Arc::new(Shared {
            rules,
            limits,
            client,
            metrics,
            labels,
        }))
    }

    /// Whether some rule allows `scheme://host:port`.
    pub(super) fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.0
            .rules
            .iter()
            .any(|rule| rule.allows(scheme, host, port))
    }

    /// The limits of the plugin's requests.
    pub(super) fn limits(&self) -> HttpLimits {
        self.0.limits
    }
}

/// The hooks of one instance's store: the plugin's policy, with the
/// connector's label and the instance's open requests.
pub(in crate::runtime) struct InstanceHooks {
    policy: OutboundPolicy,
    connector: Arc<str>,
    /// One permit per request open (sent, its response body not done).
    open_requests: Arc<Semaphore>,
    /// The retry the guest announced last (`http-retries`): its origin as
    /// [`Target::shown`] writes it and its number, for the next request
    /// to that origin's span.
    announced_retry: Option<(String, u32)>,
}

impl InstanceHooks {
    /// The connector whose instance this is.
    pub(super) fn connector(&self) -> &Arc<str> {
        &self.connector
    }

    /// The plugin's policy.
    pub(super) fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// The hosts named in metric labels.
    pub(super) fn labels(&self) -> &HostLabels {
        &self.policy.0.labels
    }

    /// The counters.
    pub(super) fn metrics(&self) -> &OutboundMetrics {
        &self.policy.0.metrics
    }

    /// Notes that the guest's next request to `origin` repeats one, the
    /// `attempt`th time.
    pub(super) fn announce_retry(&mut self, origin: String, attempt: u32) {
        self.announced_retry = Some((origin, attempt));
    }

    /// The requests one call may have open at once, none open yet.
    pub(super) fn open_requests(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.policy.limits().max_concurrent_requests))
    }

    pub(super) fn new(policy: OutboundPolicy, connector: Arc<str>) -> Self {
        let open_requests = Arc::new(Semaphore::new(policy.limits().max_concurrent_requests));
        Self {
            policy,
            connector,
            open_requests,
            announced_retry: None,
        }
    }

    /// Refuses `request` to `shown`, counted and logged; the guest gets
    /// the refusal's error.
    fn refuse(
        &self,
        request: http::Request<WasiBody>,
        shown: &str,
        refusal: Refusal,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let shared = &self.policy.0;
        shared.labels.deny(
            &shared.metrics,
            &self.connector,
            shown,
            refusal.denial,
            &refusal.message,
        );
        // Take the body the guest is writing before answering, so it sees
        // the refusal rather than a broken body stream; frame by frame,
        // dropping each, so a large body never sits in host memory, outside
        // the guest's memory cap.
        Box::new(async move {
            drain(request.into_body()).await;
            Err(refusal.error)
        })
    }
}

/// Headers a guest may not send: only the server speaks to its proxy, and
/// `Max-Forwards` would let a proxy answer in the target's place.
fn is_proxy_header(name: &HeaderName) -> bool {
    name == http::header::MAX_FORWARDS || name.as_str().starts_with("proxy-")
}

/// What `send_request` hands back: the response and a future reporting
/// errors of the response body.
type Sent = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for InstanceHooks {
    /// The pooled client sets `Host` for HTTP/1.1; HTTP/2 carries the
    /// authority in the request line.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _body_errors: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let open_requests = Arc::clone(&self.open_requests);
        self.send_counted(request, options, open_requests)
    }
}

impl InstanceHooks {
    /// Sends `request` if the policy allows it, holding one of
    /// `open_requests` until its response body is done: the instance's
    /// (one call at a time in the sync world), or the calling call's (the
    /// async world's `waits.send`).
    pub(super) fn send_counted(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        open_requests: Arc<Semaphore>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let target = Target::of(request.uri());
        let shown = target.shown();
        if let Err(refusal) = self.judge(&request, &target) {
            return self.refuse(request, &shown, refusal);
        }
        let Ok(permit) = open_requests.try_acquire_owned() else {
            let limit = self.policy.limits().max_concurrent_requests;
            let message = format!(
                "the call already has {limit} outbound requests open, the most its plugin \
                 allows (http.max_concurrent_requests in its manifest)"
            );
            let refusal = Refusal {
                denial: Denial::TooManyRequests,
                error: Error::InternalError(Some(message.clone())),
                message,
            };
            return self.refuse(request, &shown, refusal);
        };
        drop_proxy_headers(&mut request, &self.connector);
        let span = crate::trace_span!(
            "http",
            otel.name = %format_args!("{} {}", request.method(), target.host),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %request.method(),
            server.address = %target.host,
            server.port = target.port,
            http.request.resend_count = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            http.response.body.size = tracing::field::Empty,
        );
        if let Some((_, attempt)) = self.announced_retry.take_if(|(origin, _)| *origin == shown) {
            span.record("http.request.resend_count", attempt);
        }
        crate::telemetry::inject_traceparent(&span, request.headers_mut());
        let outgoing = Outgoing {
            shared: Arc::clone(&self.policy.0),
            connector: Arc::clone(&self.connector),
            timeouts: self.policy.0.limits.apply(options),
            target,
            shown,
        };
        Box::new(outgoing.send(request, permit).instrument(span))
    }
}

/// Why a request is refused, as the metric, the log and the guest see it.
struct Refusal {
    denial: Denial,
    message: String,
    error: Error,
}

impl InstanceHooks {
    /// Whether `request` to `target` may be sent at all.
    fn judge(&self, request: &http::Request<WasiBody>, target: &Target) -> Result<(), Refusal> {
        let shown = target.shown();
        if request
            .uri()
            .authority()
            .is_some_and(|authority| authority.as_str().contains('@'))
        {
            let message = format!(
                "the URL to {shown} carries credentials (user:password@): refused, so they are \
                 never sent, pooled or logged; send them in a header (Authorization)"
            );
            return Err(Refusal {
                denial: Denial::CredentialsInUrl,
                error: Error::InternalError(Some(message.clone())),
                message,
            });
        }
        let method = request.method();
        if method == Method::TRACE || method == Method::CONNECT {
            return Err(Refusal {
                denial: Denial::Method,
                message: format!("{method} is never sent: a proxy may answer it itself"),
                error: Error::HttpRequestMethodInvalid,
            });
        }
        if !self
            .policy
            .allows(target.scheme(), &target.host, target.port)
        {
            return Err(Refusal {
                denial: Denial::Rule,
                message: "no rule of the plugin's allowed_hosts allows it".to_owned(),
                error: Error::HttpRequestDenied,
            });
        }
        Ok(())
    }
}

/// Drops the `Max-Forwards` and `Proxy-*` headers a guest set.
fn drop_proxy_headers(request: &mut http::Request<WasiBody>, connector: &str) {
    let headers = request.headers_mut();
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_proxy_header(name))
        .cloned()
        .collect();
    for name in &dropped {
        tracing::debug!(connector, header = %name, "a guest's proxy header dropped");
        headers.remove(name);
    }
}

/// One request on its way: sent by the plugin's client, counted, its
/// response body capped and holding its place among the call's open
/// requests.
struct Outgoing {
    shared: Arc<Shared>,
    connector: Arc<str>,
    timeouts: super::Timeouts,
    target: Target,
    shown: String,
}

impl Outgoing {
    async fn send(self, request: http::Request<WasiBody>, permit: OwnedSemaphorePermit) -> Sent {
        let Self {
            shared,
            connector,
            timeouts,
            target,
            shown,
        } = self;
        let label = shared.labels.sent(&connector, &shown);
        let count = |status: &str| {
            shared
                .metrics
                .requests
                .with_label_values(&[connector.as_ref(), label.as_str(), status])
                .inc();
        };
        tracing::debug!(connector = %connector, host = %shown, "outbound HTTP request");
        let exchange = Exchange {
            target,
            timeouts,
            connector: Arc::clone(&connector),
            host_label: label.clone(),
            shown: shown.clone(),
        };
        let span = tracing::Span::current();
        let response = match shared.client.send(request, exchange).await {
            Ok(response) => response,
            Err(err) => {
                span.record("otel.status_code", "ERROR");
                count("error");
                tracing::debug!(connector = %connector, host = %shown, "outbound HTTP failed: {err}");
                return Err(err);
            }
        };
        count(status_class(response.status().as_u16()));
        let max_bytes = shared.limits.max_response_bytes;
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        span.record("http.response.status_code", response.status().as_u16());
        if let Some(bytes) = declared {
            span.record("http.response.body.size", bytes);
        }
        if declared.is_some_and(|len| len > max_bytes) {
            return Err(Error::HttpResponseBodySize(Some(max_bytes)));
        }
        let response =
            response.map(|body| CappedBody::new(body, max_bytes, Some(permit)).boxed_unsync());
        let body_errors = async { Ok(()) };
        Ok((
            response,
            Box::new(body_errors) as Box<dyn Future<Output = _> + Send>,
        ))
    }
}

/// Reads `body` to its end (or its first error), keeping nothing.
async fn drain<B: Body + Unpin>(mut body: B) {
    while let Some(Ok(frame)) = body.frame().await {
        drop(frame);
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A response body that fails once it has delivered more than its cap,
/// with the cap as the error's size; it holds its request's place among the
/// call's open requests until it is dropped.
struct CappedBody {
    inner: http_body_util::combinators::UnsyncBoxBody<Bytes, Error>,
    remaining: u64,
    cap: u64,
    _open: Option<OwnedSemaphorePermit>,
}

impl CappedBody {
    fn new(
        inner: http_body_util::combinators::UnsyncBoxBody<Bytes, Error>,
        cap: u64,
        open: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            inner,
            remaining: cap,
            cap,
            _open: open,
        }
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(self.cap)))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_past_its_cap_fails_with_the_cap() {
        let body = http_body_util::Full::new(Bytes::from(vec![0u8; 10]))
            .map_err(|never| match never {})
            .boxed_unsync();
        let capped = CappedBody::new(body, 4, None);
        let Err(error) = capped.collect().await else {
            panic!("a body over the cap was delivered");
        };
        assert!(
            matches!(error, Error::HttpResponseBodySize(Some(4))),
            "{error:?}"
        );

        let body = http_body_util::Full::new(Bytes::from_static(b"abcd"))
            .map_err(|never| match never {})
            .boxed_unsync();
        let collected = CappedBody::new(body, 4, None)
            .collect()
            .await
            .expect("at the cap");
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"abcd"));
    }

    /// A body of `left` frames of `size` bytes that counts how many of the
    /// frames it handed out are still alive, and the most that ever were.
    struct CountingBody {
        left: usize,
        size: usize,
        alive: Arc<std::sync::atomic::AtomicUsize>,
        most_alive: Arc<std::sync::atomic::AtomicUsize>,
    }

    /// A frame's bytes, counted alive until dropped.
    struct CountedBytes {
        bytes: Vec<u8>,
        alive: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsRef<[u8]> for CountedBytes {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }

    impl Drop for CountedBytes {
        fn drop(&mut self) {
            self.alive.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Body for CountingBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.left -= 1;
            let alive = self.alive.fetch_add(1, SeqCst) + 1;
            self.most_alive.fetch_max(alive, SeqCst);
            let data = Bytes::from_owner(CountedBytes {
                bytes: vec![0; self.size],
                alive: Arc::clone(&self.alive),
            });
            Poll::Ready(Some(Ok(Frame::data(data))))
        }
    }

    #[tokio::test]
    async fn a_denied_body_is_drained_one_frame_at_a_time() {
        let alive = Arc::default();
        let most_alive = Arc::default();
        let body = CountingBody {
            left: 1000,
            size: 64 << 10,
            alive: Arc::clone(&alive),
            most_alive: Arc::clone(&most_alive),
        };
        drain(body).await;
        use std::sync::atomic::Ordering::SeqCst;
        assert_eq!(alive.load(SeqCst), 0);
        // 1000 frames of 64 KiB went by, never more than one held at once.
        assert_eq!(most_alive.load(SeqCst), 1);
    }
}
