//! The registry the metrics are exported from. Beside what the `prometheus`
//! crate's registry exports (families with at least one series), it
//! describes every registered family from the start: a counter with labels
//! has no series until something counts, yet its `# HELP` and `# TYPE`
//! lines tell a scraper, a dashboard's metric browser and an operator
//! reading `/metrics` that it exists.

use std::{
    collections::HashSet,
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
};

use prometheus::{
    Encoder, Registry, TextEncoder,
    core::Collector,
    proto::{MetricFamily, MetricType},
};

/// Where metrics are registered and rendered from. Clones share it.
#[derive(Clone, Default)]
pub struct MetricRegistry {
    registry: Registry,
    /// Every collector registered, for the families without series yet.
    collectors: Arc<Mutex<Vec<Box<dyn Collector>>>>,
}

impl MetricRegistry {
    /// Registers `collector` (a clone of it: clones share their series).
    pub fn register<C: Collector + Clone + 'static>(
        &self,
        collector: &C,
    ) -> prometheus::Result<()> {
        self.registry.register(Box::new(collector.clone()))?;
        self.collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(collector.clone()));
        Ok(())
    }

    /// Every family in the Prometheus text format: those with series as
    /// the crate encodes them, then the others' `# HELP` and `# TYPE`.
    pub fn render(&self) -> String {
        let gathered = self.registry.gather();
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&gathered, &mut buffer) {
            tracing::error!("cannot encode metrics: {err}");
        }
        let mut text = String::from_utf8_lossy(&buffer).into_owned();
        let exported: HashSet<&str> = gathered.iter().map(MetricFamily::name).collect();
        let collectors = self
            .collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Collected again only when one of its families had no series: a
        // busy collector is not collected twice per scrape.
        let mut empty: Vec<MetricFamily> = collectors
            .iter()
            .filter(|collector| {
                collector
                    .desc()
                    .iter()
                    .any(|desc| !exported.contains(desc.fq_name.as_str()))
            })
            .flat_map(|collector| collector.collect())
            .filter(|family| !exported.contains(family.name()))
            .collect();
        empty.sort_by(|a, b| a.name().cmp(b.name()));
        for family in empty {
            let help = family.help().replace('\\', r"\\").replace('\n', r"\n");
            let _ = writeln!(text, "# HELP {} {help}", family.name());
            let _ = writeln!(
                text,
                "# TYPE {} {}",
                family.name(),
                type_name(family.get_field_type())
            );
        }
        text
    }
}

/// A family's type as the text format writes it.
fn type_name(kind: MetricType) -> &'static str {
    match kind {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::SUMMARY => "summary",
        MetricType::HISTOGRAM => "histogram",
        MetricType::UNTYPED => "untyped",
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{IntCounterVec, Opts};

    use super::*;

    #[test]
    fn a_family_without_series_is_described_and_one_with_series_exported_once() {
        let registry = MetricRegistry::default();
        let counters = |name: &str| {
            let counter = IntCounterVec::new(Opts::new(name, "Things\ncounted"), &["kind"])
                .expect("a valid counter");
            registry.register(&counter).expect("registered");
            counter
        };
        let quiet = counters("test_quiet_total");
        let busy = counters("test_busy_total");
        busy.with_label_values(&["a"]).inc();
        let text = registry.render();
        assert!(
            text.contains(
                "# HELP test_quiet_total Things\\ncounted\n# TYPE test_quiet_total counter\n"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE test_busy_total counter").count(),
            1,
            "{text}"
        );
        assert!(text.contains("test_busy_total{kind=\"a\"} 1"), "{text}");
        // Once it counts, it is exported as the crate does, described once.
        quiet.with_label_values(&["b"]).inc();
        let text = registry.render();
        assert_eq!(text.matches("# HELP test_quiet_total").count(), 1, "{text}");
    }
}
