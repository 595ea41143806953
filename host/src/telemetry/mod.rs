//! OpenTelemetry traces of connector calls, exported over OTLP/gRPC.
//!
//! Off unless the standard variables ask for them —
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
//! with `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and the batch
//! processor's `OTEL_BSP_*` read by the SDK — so that a server without them
//! makes no exporter, no thread and no span beyond the one its logs use.
//!
//! When on, every call is a span tree: the RPC (`rpc`: task type,
//! operation, outcome, gRPC code), and under it the wait for a call slot
//! (`queue`), the instance (`instantiate`, fresh or reused), the guest call
//! (`guest_call`), and each outbound HTTP request (`http`) and SSH
//! operation (`ssh`) the guest makes. Where the RPC's trace comes from:
//!
//! - an incoming W3C `traceparent` in the gRPC metadata, continued;
//! - else the Flyte run's own trace ([`run_trace`]), derived as
//!   flyteplugins-otel derives it, so the spans sit in the run's trace
//!   beside the task's; CreateTask carries the run's identity, and leaves
//!   the trace id in the resource meta for GetTask and DeleteTask;
//! - else a new trace.
//!
//! Outbound requests carry `traceparent`, so a service that traces joins.

mod propagation;
mod run_trace;

use std::{
    cell::Cell,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::Context as _;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::registry::LookupSpan;

pub use self::propagation::{inject_traceparent, remote_parent};
pub use self::run_trace::{append_to_meta, take_from_meta, trace_id_for_run, trace_id_for_task};

/// Whether traces are exported: set once, when [`Traces::from_env`] makes
/// the exporter.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported; when not, the call path makes none of the
/// spans only traces need.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The target of the spans only traces have ([`trace_span!`]): the log
/// leaves them out, so a line logged inside one still shows its call's
/// `rpc` span.
pub const SPAN_TARGET: &str = "flyte_connect::trace";

/// Whether the log shows `metadata`'s span or event: everything but the
/// spans only traces have.
pub fn logged(metadata: &tracing::Metadata<'_>) -> bool {
    !(metadata.is_span() && metadata.target() == SPAN_TARGET)
}

/// A span of a call's part, made only when traces are on and a call is
/// under way (a component's metadata read at load is no call's);
/// `Span::none()` otherwise. Its target is [`SPAN_TARGET`].
#[macro_export]
macro_rules! trace_span {
    ($($arg:tt)*) => {
        if $crate::telemetry::enabled() && !tracing::Span::current().is_none() {
            tracing::info_span!(target: "flyte_connect::trace", $($arg)*)
        } else {
            tracing::Span::none()
        }
    };
}

/// The exporter, its batch processor and the runtime its gRPC client runs
/// on; flushed by [`Traces::shutdown`].
pub struct Traces {
    provider: SdkTracerProvider,
    runtime: tokio::runtime::Runtime,
}

/// The service name spans carry unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "flyte-connect";

/// The variables that name an endpoint: one of them turns traces on.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The protocols the exporter speaks, as `OTEL_EXPORTER_OTLP_PROTOCOL`
/// names them.
const PROTOCOL_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

fn variable(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

impl Traces {
    /// The exporter the environment asks for, or `None` when it names no
    /// endpoint (or `OTEL_SDK_DISABLED=true`). A protocol other than gRPC
    /// is an error naming it.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        if !ENDPOINT_VARIABLES
            .iter()
            .any(|name| variable(name).is_some())
            || variable("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        for name in PROTOCOL_VARIABLES {
            if let Some(protocol) = variable(name).filter(|p| p != "grpc") {
                anyhow::bail!(
                    "{name}={protocol} is not supported: flyte-connect exports OTLP over gRPC \
                     (set it to grpc, or leave it unset)"
                );
            }
        }
        // tonic's client spawns its connection onto the runtime it is made
        // in: one worker thread of its own, so exporting never waits for
        // the calls' threads.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .context("cannot start the trace exporter's runtime")?;
        let exporter = {
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .context("cannot make the OTLP trace exporter")?
        };
        let service = variable("OTEL_SERVICE_NAME").unwrap_or_else(|| SERVICE_NAME.to_owned());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(RunScopedIds::default())
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(Self { provider, runtime }))
    }

    /// The layer that turns the server's spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SERVICE_NAME))
            .with_location(false)
            .with_threads(false)
    }

    /// Exports the spans still buffered, then stops.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!("exporting the last spans: {err}");
        }
        self.runtime.shutdown_background();
    }
}

thread_local! {
    /// The trace id the next root span made on this thread takes.
    static PINNED_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, but for a root span started by [`begin_rpc`] in a run's
/// trace, which takes that trace's id.
#[derive(Debug, Default)]
struct RunScopedIds(RandomIdGenerator);

impl IdGenerator for RunScopedIds {
    fn new_trace_id(&self) -> TraceId {
        PINNED_TRACE_ID
            .with(Cell::get)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Places an RPC's span in its trace, before it is first entered: under
/// `remote` (an incoming `traceparent`) if there is one, else as a root of
/// the run's trace `run` if known, else as the root of a new trace.
pub fn begin_rpc(
    span: &tracing::Span,
    remote: Option<opentelemetry::Context>,
    run: Option<TraceId>,
) {
    if !enabled() {
        return;
    }
    if let Some(parent) = remote {
        // Fails only for a span already started, which this one is not.
        let _ = span.set_parent(parent);
    } else if let Some(trace_id) = run {
        PINNED_TRACE_ID.with(|pinned| pinned.set(Some(trace_id)));
        // Starts the span now, so it takes the pinned id.
        let _ = span.context();
        PINNED_TRACE_ID.with(|pinned| pinned.set(None));
    }
}

/// The trace id of `span`, once started; for logs.
pub fn trace_id_of(span: &tracing::Span) -> Option<TraceId> {
    if !enabled() {
        return None;
    }
    use opentelemetry::trace::TraceContextExt as _;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id())
}
