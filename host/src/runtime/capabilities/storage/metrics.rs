//! What the storage capability counts.

use prometheus::{IntCounterVec, Opts};

use crate::metrics::MetricRegistry;

/// The counters of object-storage transfers.
#[derive(Clone)]
pub(super) struct StorageMetrics {
    transfers: IntCounterVec,
    bytes: IntCounterVec,
}

impl StorageMetrics {
    pub(super) fn register(registry: &MetricRegistry) -> prometheus::Result<Self> {
        let transfers = IntCounterVec::new(
            Opts::new(
                "flyte_connector_storage_transfers_total",
                "Transfers from SSH hosts to object storage, by event: started, joined (a \
                 call found one in flight), done, failed",
            ),
            &["connector", "event"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "flyte_connector_storage_bytes_total",
                "Bytes moved to object storage by completed transfers",
            ),
            &["connector"],
        )?;
        registry.register(&transfers)?;
        registry.register(&bytes)?;
        Ok(Self { transfers, bytes })
    }

    pub(super) fn started(&self, connector: &str) {
        self.transfers
            .with_label_values(&[connector, "started"])
            .inc();
    }

    pub(super) fn joined(&self, connector: &str) {
        self.transfers
            .with_label_values(&[connector, "joined"])
            .inc();
    }

    pub(super) fn finished(&self, connector: &str, event: &str, bytes: u64) {
        self.transfers.with_label_values(&[connector, event]).inc();
        self.bytes.with_label_values(&[connector]).inc_by(bytes);
    }
}
