//! The `host` labels of each connector's outbound metrics, and the refusals
//! of its requests, logged and counted.
//!
//! A guest chooses the hosts it calls, so the hosts each connector names in
//! metric labels and warnings are bounded ([`MAX_NAMED_HOSTS`], past which
//! `_other`), and the bound holds for the life of the process: the sets are
//! kept per connector name, across reloads of its plugin, so reloading a
//! plugin never makes room for more series.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use super::metrics::OutboundMetrics;

/// Distinct hosts per connector named in logs and metric labels, of the
/// requests it sent and of those it was refused.
pub(super) const MAX_NAMED_HOSTS: usize = 64;

/// The label of hosts past [`MAX_NAMED_HOSTS`].
pub(super) const OTHER_HOSTS: &str = "_other";

/// Why an outbound request was refused before anything was sent: the
/// `reason` label of `flyte_connector_outbound_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Denial {
    /// No rule of `allowed_hosts` allows the host.
    Rule,
    /// The host resolved only to internal addresses no rule names.
    Address,
    /// `TRACE` or `CONNECT`, which a proxy may answer itself.
    Method,
    /// The URL carried `user:password@`.
    CredentialsInUrl,
    /// The call had as many requests open as its plugin allows.
    TooManyRequests,
}

impl Denial {
    /// The metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Address => "address",
            Self::Method => "method",
            Self::CredentialsInUrl => "credentials_in_url",
            Self::TooManyRequests => "too_many_requests",
        }
    }
}

/// Which of a connector's label sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Sent,
    Denied(Denial),
    Retried,
}

/// The named hosts of every connector. One per server, shared by every
/// plugin's policy and client.
#[derive(Debug, Default)]
pub(in crate::runtime) struct HostLabels {
    seen: Mutex<HashMap<LabelSet, HashSet<String>>>,
}

/// One connector's set of one kind.
type LabelSet = (Arc<str>, Kind);

impl HostLabels {
    /// The label of `host` among the hosts `connector` sent requests to.
    pub(super) fn sent(&self, connector: &Arc<str>, host: &str) -> String {
        self.label(connector, Kind::Sent, host).0
    }

    /// The label of `host` among the hosts `connector` retried requests to.
    pub(super) fn retried(&self, connector: &Arc<str>, host: &str) -> String {
        self.label(connector, Kind::Retried, host).0
    }

    /// Counts and logs a refusal of `connector`'s request to `host`, as
    /// `message` explains it: a warning the first time for this connector,
    /// host and reason, at debug after.
    pub(super) fn deny(
        &self,
        metrics: &OutboundMetrics,
        connector: &Arc<str>,
        host: &str,
        denial: Denial,
        message: &str,
    ) {
        let (label, first) = self.label(connector, Kind::Denied(denial), host);
        if first {
            tracing::warn!(
                connector = %connector,
                host,
                reason = denial.label(),
                "outbound HTTP refused: {message} (logged once per connector, host and reason)"
            );
        } else {
            tracing::debug!(connector = %connector, host, reason = denial.label(), "outbound HTTP refused");
        }
        metrics
            .denied
            .with_label_values(&[connector.as_ref(), label.as_str(), denial.label()])
            .inc();
    }

    /// The label of `host` in set `kind` of `connector`, and whether it is
    /// named for the first time.
    fn label(&self, connector: &Arc<str>, kind: Kind, host: &str) -> (String, bool) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let hosts = seen.entry((Arc::clone(connector), kind)).or_default();
        if hosts.contains(host) {
            (host.to_owned(), false)
        } else if hosts.len() < MAX_NAMED_HOSTS {
            hosts.insert(host.to_owned());
            (host.to_owned(), true)
        } else {
            (OTHER_HOSTS.to_owned(), false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_past_the_limit_share_one_label_for_the_life_of_the_labels() {
        let labels = HostLabels::default();
        let connector: Arc<str> = Arc::from("c");
        for i in 0..MAX_NAMED_HOSTS {
            assert_eq!(labels.sent(&connector, &format!("h{i}")), format!("h{i}"));
        }
        assert_eq!(labels.sent(&connector, "h0"), "h0");
        assert_eq!(labels.sent(&connector, "new"), OTHER_HOSTS);
        // Another connector, or another kind, has a set of its own.
        assert_eq!(labels.sent(&Arc::from("d"), "new"), "new");
        assert_eq!(
            labels.label(&connector, Kind::Denied(Denial::Rule), "new"),
            ("new".to_owned(), true)
        );
        assert_eq!(
            labels.label(&connector, Kind::Denied(Denial::Rule), "new"),
            ("new".to_owned(), false)
        );
    }
}
