//! An OpenTelemetry collector on loopback, as the trace tests need one: the
//! OTLP/gRPC `TraceService`, recording every span exported to it.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value::Value},
};
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;

/// A span as the collector received it, ids in hex.
#[derive(Debug, Clone)]
pub struct RecordedSpan {
    /// The span's name.
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// Its attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// `service.name` of the resource it came with.
    pub service: String,
}

impl RecordedSpan {
    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<RecordedSpan>>,
    exports: AtomicUsize,
}

#[derive(Clone)]
struct Service(Arc<Received>);

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.exports.fetch_add(1, Ordering::SeqCst);
        let mut recorded = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref()))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    recorded.push(RecordedSpan {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                            .collect(),
                        service: service.clone(),
                    });
                }
            }
        }
        crate::fake_http::lock(&self.0.spans).extend(recorded);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running collector; it stops when dropped.
pub struct Collector {
    addr: std::net::SocketAddr,
    received: Arc<Received>,
    _stop: oneshot::Sender<()>,
}

impl Collector {
    /// Serves on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Serves on loopback port `port` (0: a free one).
    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|err| panic!("loopback port {port} for the collector: {err}"));
        let addr = listener.local_addr().expect("the collector's address");
        let received = Arc::new(Received::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(Service(Arc::clone(&received)));
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            received,
            _stop: stop,
        }
    }

    /// The URL `OTEL_EXPORTER_OTLP_ENDPOINT` names it by.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment a server exports to it with, quickly.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()),
            // The batch processor's delay: spans a tenth of a second after
            // they end, not five seconds.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<RecordedSpan> {
        crate::fake_http::lock(&self.received.spans).clone()
    }

    /// How many export requests reached it.
    pub fn exports(&self) -> usize {
        self.received.exports.load(Ordering::SeqCst)
    }

    /// The spans once `done` says they are all there; fails the test after
    /// 20 seconds, showing what arrived.
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[RecordedSpan]) -> bool,
    ) -> Vec<RecordedSpan> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{what} never reached the collector; it has:\n{spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
