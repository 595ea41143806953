//! Prometheus metrics, with the names and labels of the Python connector
//! server so existing dashboards keep working, plus a few of our own, all
//! under the `flyte_connector_` prefix.

mod registry;
mod summary;

use std::time::Duration;

use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

pub use self::registry::MetricRegistry;
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

/// Upper bounds of the request-duration histogram's buckets, in seconds:
/// from a millisecond call to one at the default call timeout.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Registers metrics in a registry as they are made.
struct Add<'a>(&'a MetricRegistry);

impl Add<'_> {
    /// `metric`, registered.
    fn metric<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: M,
    ) -> prometheus::Result<M> {
        self.0.register(&metric)?;
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
    registry: MetricRegistry,
    success: CounterVec,
    failure: CounterVec,
    latency: SummaryVec,
    duration: HistogramVec,
    input_bytes: SummaryVec,
    /// Guest calls in flight.
    pub calls_in_flight: IntGauge,
    /// Calls waiting for a call slot.
    pub calls_queued: IntGauge,
    /// Calls that may wait for a slot (`--max-queued-calls`).
    pub queue_capacity: IntGauge,
    /// Call slots (`--max-concurrent-calls`).
    pub call_slots: IntGauge,
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
        let registry = MetricRegistry::default();
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
            duration: add.metric(HistogramVec::new(
                HistogramOpts::new(
                    "flyte_connector_request_duration_seconds",
                    "Time a request took in the server, queue wait included, in buckets for \
                     quantiles",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
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
            queue_capacity: add.gauge(
                "flyte_connector_calls_queue_capacity",
                "Connector calls that may wait for a call slot (--max-queued-calls); one more is \
                 refused with RESOURCE_EXHAUSTED",
            )?,
            call_slots: add.gauge(
                "flyte_connector_call_slots",
                "Call slots of the instance pool (--max-concurrent-calls)",
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
    pub fn registry(&self) -> &MetricRegistry {
        &self.registry
    }

    /// Records a request that succeeded.
    pub fn record_success(&self, task_type: &str, operation: Operation, elapsed: Duration) {
        self.success
            .with_label_values(&[task_type, operation.label()])
            .inc();
        self.record_duration(task_type, operation, elapsed);
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
        self.record_duration(task_type, operation, elapsed);
    }

    /// Records how long a request took: the Python server's summary and
    /// our histogram.
    fn record_duration(&self, task_type: &str, operation: Operation, elapsed: Duration) {
        let labels = [task_type, operation.label()];
        self.latency.observe(&labels, elapsed.as_secs_f64());
        self.duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
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
        self.registry.render()
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
        assert!(text.contains(r#"flyte_connector_request_duration_seconds_bucket{operation="create",task_type="echo",le="0.25"} 1"#), "{text}");
        assert!(text.contains(r#"flyte_connector_request_duration_seconds_bucket{operation="create",task_type="echo",le="0.1"} 0"#), "{text}");
        // Failures never recorded are described all the same.
        assert!(
            text.contains("# TYPE flyte_connector_requests_failure_total counter"),
            "{text}"
        );
    }
}
