//! The outbound-HTTP metrics, registered in the server's registry when the
//! capability is made. Their `host` labels are bounded (see `labels`).

use prometheus::{IntCounterVec, Opts};

use crate::metrics::MetricRegistry;

/// Outbound HTTP counters; the policy and the connector record into them.
#[derive(Clone)]
pub(super) struct OutboundMetrics {
    /// Requests refused before anything was sent, by connector, host and
    /// reason (`rule`: no rule of `allowed_hosts` allows the host;
    /// `address`: it resolved to an internal address no rule names;
    /// `method`, `credentials_in_url`, `too_many_requests`).
    pub(super) denied: IntCounterVec,
    /// Requests sent, by connector, host and status class (`2xx`, ..., `error`).
    pub(super) requests: IntCounterVec,
    /// Requests a connector's SDK repeated after a throttled or failed
    /// attempt, by connector and host, as the guest tells them
    /// (`flyte:connector/http-retries`).
    pub(super) retries: IntCounterVec,
    /// New connections opened, by connector and host: with pooling, far
    /// fewer than requests.
    pub(super) connections: IntCounterVec,
    /// TLS handshakes that failed, by connector, host and reason
    /// (`unknown_issuer`, `name_mismatch`, `expired`, `alert`, ...).
    pub(super) tls_failures: IntCounterVec,
}

impl OutboundMetrics {
    /// The counters, registered in `registry`.
    pub(super) fn register(registry: &MetricRegistry) -> prometheus::Result<Self> {
        Self::build(Some(registry))
    }

    /// Counters no registry exports: for connections no plugin's request
    /// makes (the host's own, to object stores), which count elsewhere.
    pub(super) fn unexported() -> prometheus::Result<Self> {
        Self::build(None)
    }

    fn build(registry: Option<&MetricRegistry>) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
            if let Some(registry) = registry {
                registry.register(&counter)?;
            }
            Ok::<_, prometheus::Error>(counter)
        };
        Ok(Self {
            denied: counter(
                "flyte_connector_outbound_denied_total",
                "Outbound HTTP requests refused before anything was sent, by reason: rule \
                 (allowed_hosts), address (an internal address no rule names), method, \
                 credentials_in_url, too_many_requests",
                &["connector", "host", "reason"],
            )?,
            requests: counter(
                "flyte_connector_outbound_requests_total",
                "Outbound HTTP requests sent, by the class of their answer's status",
                &["connector", "host", "status"],
            )?,
            retries: counter(
                "flyte_connector_outbound_retries_total",
                "Outbound HTTP requests repeated by a connector after a throttled (429), \
                 unavailable (502, 503, 504) or unconnected attempt",
                &["connector", "host"],
            )?,
            connections: counter(
                "flyte_connector_outbound_connections_total",
                "New outbound connections opened (reused ones are not counted)",
                &["connector", "host"],
            )?,
            tls_failures: counter(
                "flyte_connector_outbound_tls_failures_total",
                "Outbound TLS handshakes that failed, by reason",
                &["connector", "host", "reason"],
            )?,
        })
    }
}
