//! W3C trace context across the server's edges: an incoming `traceparent`
//! in gRPC metadata continues its trace, and outbound requests carry the
//! span they are sent from.

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::TraceContextExt as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// gRPC metadata, as the propagator reads it.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The remote parent an incoming call's `traceparent` names, if it names a
/// valid one (only when traces are on).
pub fn remote_parent(metadata: &tonic::metadata::MetadataMap) -> Option<Context> {
    if !super::enabled() || !metadata.contains_key("traceparent") {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&Metadata(metadata));
    context.span().span_context().is_valid().then_some(context)
}

/// HTTP headers, as the propagator writes them.
struct Headers<'a>(&'a mut http::HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Sets `traceparent` (and `tracestate`) on an outbound request to `span`'s
/// context, replacing any the guest set (only when traces are on).
pub fn inject_traceparent(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if !super::enabled() {
        return;
    }
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut Headers(headers));
    }
}
