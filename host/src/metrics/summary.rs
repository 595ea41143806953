//! A Prometheus summary without quantiles (`_sum` and `_count` per label
//! set), as Python's `prometheus_client.Summary` exports it. The `prometheus`
//! crate has no summary type, so this is a small collector of our own.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use prometheus::{
    core::{Collector, Desc},
    proto::{LabelPair, Metric, MetricFamily, MetricType, Summary},
};

#[derive(Default, Clone, Copy)]
struct Totals {
    count: u64,
    sum: f64,
}

/// A summary with labels. Clones share the same series.
#[derive(Clone)]
pub struct SummaryVec {
    desc: Desc,
    label_names: Vec<String>,
    series: Arc<Mutex<BTreeMap<Vec<String>, Totals>>>,
}

impl SummaryVec {
    /// A summary named `name` with the given label names.
    pub fn new(name: &str, help: &str, label_names: &[&str]) -> prometheus::Result<Self> {
        let label_names: Vec<String> = label_names.iter().map(|l| (*l).to_owned()).collect();
        Ok(Self {
            desc: Desc::new(
                name.to_owned(),
                help.to_owned(),
                label_names.clone(),
                HashMap::new(),
            )?,
            label_names,
            series: Arc::default(),
        })
    }

    /// Records one observation for the label values (in label-name order).
    pub fn observe(&self, label_values: &[&str], value: f64) {
        let key: Vec<String> = label_values.iter().map(|v| (*v).to_owned()).collect();
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let totals = series.entry(key).or_default();
        totals.count += 1;
        totals.sum += value;
    }
}

impl Collector for SummaryVec {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let metrics = series
            .iter()
            .map(|(values, totals)| {
                // Sorted by name, as the crate's own vectors export them.
                let mut labels: Vec<LabelPair> = self
                    .label_names
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect();
                labels.sort_by(|a, b| a.name().cmp(b.name()));
                let mut summary = Summary::default();
                summary.set_sample_count(totals.count);
                summary.set_sample_sum(totals.sum);
                let mut metric = Metric::default();
                metric.set_label(labels);
                metric.set_summary(summary);
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(metrics);
        vec![family]
    }
}
