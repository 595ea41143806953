//! Every outbound request a guest makes goes through [`OutboundPolicy`]:
//! checked against the plugin's rules before any connection is made (and
//! before anything reaches a proxy), sent by the plugin's pooled client with
//! the grant's timeouts, its response body capped in size, and counted.

use std::{
    collections::HashSet,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::{
    HttpLimits, Target,
    client::{Exchange, PooledClient},
    rules::HostRule,
};
use crate::metrics::OutboundMetrics;

/// Distinct hosts per plugin named in logs and metric labels; past this
/// many, a guest calling ever new hosts is counted under `_other`, so it
/// cannot grow the metrics without bound.
const MAX_NAMED_HOSTS: usize = 64;

/// The label of hosts past [`MAX_NAMED_HOSTS`].
const OTHER_HOSTS: &str = "_other";

struct Shared {
    rules: Vec<HostRule>,
    limits: HttpLimits,
    client: PooledClient,
    metrics: OutboundMetrics,
    denied: Mutex<HashSet<String>>,
    allowed: Mutex<HashSet<String>>,
}

/// One plugin's outbound-HTTP policy and client. Cheap to clone: every call
/// of the plugin shares it, with its pool and what was already logged.
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
        rules: Vec<HostRule>,
        limits: HttpLimits,
        client: PooledClient,
        metrics: OutboundMetrics,
    ) -> Self {
        Self(Arc::new(Shared {
            rules,
            limits,
            client,
            metrics,
            denied: Mutex::default(),
            allowed: Mutex::default(),
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
    #[cfg(test)]
    pub(super) fn limits(&self) -> HttpLimits {
        self.0.limits
    }

    /// The host label of `host`, and whether it is named for the first time.
    fn label(seen: &Mutex<HashSet<String>>, host: &str) -> (String, bool) {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(host) {
            (host.to_owned(), false)
        } else if seen.len() < MAX_NAMED_HOSTS {
            seen.insert(host.to_owned());
            (host.to_owned(), true)
        } else {
            (OTHER_HOSTS.to_owned(), false)
        }
    }
}

/// The hooks of one call's store: the plugin's policy, with the call's
/// connector label.
pub(in crate::runtime) struct CallHooks {
    policy: OutboundPolicy,
    connector: Arc<str>,
}

impl CallHooks {
    pub(super) fn new(policy: OutboundPolicy, connector: Arc<str>) -> Self {
        Self { policy, connector }
    }

    fn deny(&self, shown: &str) {
        let shared = &self.policy.0;
        let (label, first) = OutboundPolicy::label(&shared.denied, shown);
        if first {
            tracing::warn!(
                connector = %self.connector,
                host = %shown,
                "outbound HTTP denied: no rule of the plugin's allowed_hosts allows it \
                 (logged once per connector and host)"
            );
        } else {
            tracing::debug!(connector = %self.connector, host = %shown, "outbound HTTP denied");
        }
        shared
            .metrics
            .denied
            .with_label_values(&[self.connector.as_ref(), label.as_str()])
            .inc();
    }
}

/// What `send_request` hands back: the response and a future reporting
/// errors of the response body.
type Sent = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for CallHooks {
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
        let target = Target::of(request.uri());
        let shown = format!("{}://{}:{}", target.scheme(), target.host, target.port);
        if !self
            .policy
            .allows(target.scheme(), &target.host, target.port)
        {
            self.deny(&shown);
            // Take the body the guest is writing before answering, so it
            // sees the denial rather than a broken body stream; frame by
            // frame, dropping each, so a large body never sits in host
            // memory, outside the guest's memory cap.
            return Box::new(async move {
                drain(request.into_body()).await;
                Err(Error::HttpRequestDenied)
            });
        }
        let shared = Arc::clone(&self.policy.0);
        let connector = Arc::clone(&self.connector);
        let timeouts = shared.limits.apply(options);
        let max_bytes = shared.limits.max_response_bytes;
        Box::new(async move {
            let (label, _) = OutboundPolicy::label(&shared.allowed, &shown);
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
            };
            let response = match shared.client.send(request, exchange).await {
                Ok(response) => response,
                Err(err) => {
                    count("error");
                    tracing::debug!(connector = %connector, host = %shown, "outbound HTTP failed: {err}");
                    return Err(err);
                }
            };
            count(status_class(response.status().as_u16()));
            let declared = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|len| len > max_bytes) {
                return Err(Error::HttpResponseBodySize(Some(max_bytes)));
            }
            let response = response.map(|body| CappedBody::new(body, max_bytes).boxed_unsync());
            let body_errors = async { Ok(()) };
            Ok((
                response,
                Box::new(body_errors) as Box<dyn Future<Output = _> + Send>,
            ))
        })
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
/// with the cap as the error's size.
struct CappedBody {
    inner: http_body_util::combinators::UnsyncBoxBody<Bytes, Error>,
    remaining: u64,
    cap: u64,
}

impl CappedBody {
    fn new(inner: http_body_util::combinators::UnsyncBoxBody<Bytes, Error>, cap: u64) -> Self {
        Self {
            inner,
            remaining: cap,
            cap,
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
        let capped = CappedBody::new(body, 4);
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
        let collected = CappedBody::new(body, 4)
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

    #[test]
    fn hosts_past_the_limit_share_one_label() {
        let seen = Mutex::default();
        for i in 0..MAX_NAMED_HOSTS {
            assert_eq!(
                OutboundPolicy::label(&seen, &format!("h{i}")),
                (format!("h{i}"), true)
            );
        }
        assert_eq!(OutboundPolicy::label(&seen, "h0"), ("h0".to_owned(), false));
        assert_eq!(
            OutboundPolicy::label(&seen, "new"),
            (OTHER_HOSTS.to_owned(), false)
        );
    }
}
