//! Prometheus metrics, with the names and labels of the Python connector
//! server so existing dashboards keep working, plus a few of our own, all
//! under the `flyte_connector_` prefix.

mod summary;

use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use self::summary::SummaryVec;
use crate::connector::Operation;

/// What a hot reload did to one plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new file is served.
    Added,
    /// A changed file replaced the version served.
    Replaced,
    /// A file is gone and no longer served.
    Removed,
    /// A new or changed file failed to load (the old version, if any, serves on).
    Failed,
}

impl ReloadOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Replaced => "replaced",
            Self::Removed => "removed",
            Self::Failed => "failed",
        }
    }
}

/// Instances started for connector calls, fresh or reused.
#[derive(Clone)]
pub struct InstanceMetrics {
    started: IntCounterVec,
}

impl InstanceMetrics {
    /// The counters of connector `name`, looked up once.
    pub fn for_connector(&self, name: &str) -> InstanceCounters {
        InstanceCounters {
            fresh: self.started.with_label_values(&[name, "fresh"]),
            reused: self.started.with_label_values(&[name, "reused"]),
        }
    }
}

/// One connector's instance counters.
#[derive(Clone)]
pub struct InstanceCounters {
    /// Calls that ran in a new instance.
    pub fresh: IntCounter,
    /// Calls that ran in a warm instance of the same tenant.
    pub reused: IntCounter,
}

/// Registers metrics in a registry as they are made.
struct Add<'a>(&'a Registry);

impl Add<'_> {
    /// `metric`, registered.
    fn metric<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: M,
    ) -> prometheus::Result<M> {
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.metric(IntGauge::new(name, help)?)
    }

    fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.metric(IntCounterVec::new(Opts::new(name, help), labels)?)
    }
}

/// The service's metrics and the registry they are exported from.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    success: CounterVec,
    failure: CounterVec,
    latency: SummaryVec,
    input_bytes: SummaryVec,
    /// Guest calls in flight.
    pub calls_in_flight: IntGauge,
    /// Calls waiting for a call slot.
    pub calls_queued: IntGauge,
    /// Call slots taken, by running calls and idle instances.
    pub call_slots_in_use: IntGauge,
    /// Instances kept idle for later calls of the same tenant.
    pub idle_instances: IntGauge,
    /// The memory budget of the calls in flight, in bytes.
    pub memory_budget_bytes: IntGauge,
    /// Bytes of the budget held: instances' memory and requests' bytes.
    pub memory_budget_used_bytes: IntGauge,
    /// Calls waiting for memory: to start, or to grow.
    pub memory_budget_waiting: IntGauge,
    /// Instances started, fresh or reused, by connector.
    pub instances: InstanceMetrics,
    reloads: IntCounterVec,
    /// Components loaded (at start and by reloads).
    pub components_loaded: IntCounter,
    /// Guest calls that trapped, panicked, ran out of memory or time.
    pub guest_crashes: IntCounter,
}

impl Metrics {
    /// Creates the metrics in a registry of their own.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let add = Add(&registry);
        Ok(Self {
            success: add.metric(CounterVec::new(
                Opts::new(
                    "flyte_connector_requests_success_total",
                    "Total number of successful requests",
                ),
                &["task_type", "operation"],
            )?)?,
            failure: add.metric(CounterVec::new(
                Opts::new(
                    "flyte_connector_requests_failure_total",
                    "Total number of failed requests",
                ),
                &["task_type", "operation", "error_code"],
            )?)?,
            latency: add.metric(SummaryVec::new(
                "flyte_connector_request_latency_seconds",
                "Time spent processing connector request",
                &["task_type", "operation"],
            )?)?,
            input_bytes: add.metric(SummaryVec::new(
                "flyte_connector_input_literal_bytes",
                "Size of input literal",
                &["task_type"],
            )?)?,
            calls_in_flight: add.gauge(
                "flyte_connector_guest_calls_in_flight",
                "Connector calls running in a WebAssembly instance right now",
            )?,
            calls_queued: add.gauge(
                "flyte_connector_calls_queued",
                "Connector calls waiting for a free call slot",
            )?,
            call_slots_in_use: add.gauge(
                "flyte_connector_call_slots_in_use",
                "Call slots of the instance pool taken by running calls and idle instances",
            )?,
            idle_instances: add.gauge(
                "flyte_connector_idle_instances",
                "Instances kept idle for later calls with the same connection (instance_reuse)",
            )?,
            memory_budget_bytes: add.gauge(
                "flyte_connector_memory_budget_bytes",
                "The memory the calls in flight may hold at once (--memory-budget)",
            )?,
            memory_budget_used_bytes: add.gauge(
                "flyte_connector_memory_budget_used_bytes",
                "Bytes of the memory budget held: instances' linear memory and requests' bytes",
            )?,
            memory_budget_waiting: add.gauge(
                "flyte_connector_memory_budget_waiting",
                "Connector calls waiting for memory of the budget, to start or to grow",
            )?,
            instances: InstanceMetrics {
                started: add.counters(
                    "flyte_connector_instances_total",
                    "Connector calls by the instance they ran in: a fresh one, or one reused \
                     from an earlier call with the same connection",
                    &["connector", "start"],
                )?,
            },
            reloads: add.counters(
                "flyte_connector_reloads_total",
                "Plugin files added, replaced, removed or failed to load by hot reload",
                &["outcome"],
            )?,
            components_loaded: add.metric(IntCounter::new(
                "flyte_connector_components_loaded_total",
                "Connector components compiled and loaded",
            )?)?,
            guest_crashes: add.metric(IntCounter::new(
                "flyte_connector_guest_crashes_total",
                "Connector calls that trapped, panicked, ran out of memory or past their deadline",
            )?)?,
            registry,
        })
    }

    /// The registry the metrics are exported from, where the capabilities
    /// register theirs.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records a request that succeeded.
    pub fn record_success(&self, task_type: &str, operation: Operation, elapsed: Duration) {
        self.success
            .with_label_values(&[task_type, operation.label()])
            .inc();
        self.latency
            .observe(&[task_type, operation.label()], elapsed.as_secs_f64());
    }

    /// Records a request that failed with an HTTP-style `error_code` ("404", "500", ...).
    pub fn record_failure(
        &self,
        task_type: &str,
        operation: Operation,
        error_code: &str,
        elapsed: Duration,
    ) {
        self.failure
            .with_label_values(&[task_type, operation.label(), error_code])
            .inc();
        self.latency
            .observe(&[task_type, operation.label()], elapsed.as_secs_f64());
    }

    /// Records what a hot reload did to one plugin file.
    pub fn record_reload(&self, outcome: ReloadOutcome) {
        self.reloads.with_label_values(&[outcome.label()]).inc();
    }

    /// Records the encoded size of a CreateTask request's inputs.
    pub fn record_input_bytes(&self, task_type: &str, bytes: usize) {
        self.input_bytes.observe(&[task_type], bytes as f64);
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!("cannot encode metrics: {err}");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_export_sum_and_count_like_prometheus_client() {
        let metrics = Metrics::new().expect("metrics");
        metrics.record_success("echo", Operation::Create, Duration::from_millis(250));
        metrics.record_input_bytes("echo", 42);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE flyte_connector_request_latency_seconds summary"),
            "{text}"
        );
        assert!(text.contains(r#"flyte_connector_request_latency_seconds_count{operation="create",task_type="echo"} 1"#), "{text}");
        assert!(text.contains(r#"flyte_connector_request_latency_seconds_sum{operation="create",task_type="echo"} 0.25"#), "{text}");
        assert!(
            text.contains(r#"flyte_connector_input_literal_bytes_sum{task_type="echo"} 42"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flyte_connector_requests_success_total{operation="create",task_type="echo"} 1"#
            ),
            "{text}"
        );
    }
}
