//! The SSH metrics, registered when the capability is made, and the bound
//! on the hosts they name.
//!
//! A connector chooses the hosts it reaches (a task template may name
//! them), so each connector names at most [`MAX_NAMED_HOSTS`] distinct
//! `host:port` in labels for the life of the process, across reloads; the
//! rest are `_other`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use prometheus::{IntCounterVec, Opts};

use crate::metrics::MetricRegistry;

/// Distinct destinations per connector named in metric labels.
const MAX_NAMED_HOSTS: usize = 64;
/// The label of destinations past [`MAX_NAMED_HOSTS`].
const OTHER_HOSTS: &str = "_other";

/// SSH counters.
#[derive(Clone)]
pub(super) struct SshMetrics {
    /// Connections opened (pooled ones reused are not counted).
    connections: IntCounterVec,
    /// Operations, by kind and outcome.
    operations: IntCounterVec,
    /// Connections refused before one was made, by reason.
    denied: IntCounterVec,
    named: Arc<Mutex<HashMap<Arc<str>, HashSet<String>>>>,
}

/// What an SSH operation was, for the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    Exec,
    WriteFile,
    ReadFile,
    ReadTail,
    Stat,
    ListDirectory,
}

impl Operation {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::WriteFile => "write_file",
            Self::ReadFile => "read_file",
            Self::ReadTail => "read_tail",
            Self::Stat => "stat",
            Self::ListDirectory => "list_directory",
        }
    }
}

impl SshMetrics {
    /// The counters, registered in `registry`.
    pub(super) fn register(registry: &MetricRegistry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(&counter)?;
            Ok::<_, prometheus::Error>(counter)
        };
        Ok(Self {
            connections: counter(
                "flyte_connector_ssh_connections_total",
                "SSH connections opened (pooled connections reused are not counted)",
                &["connector", "host"],
            )?,
            operations: counter(
                "flyte_connector_ssh_operations_total",
                "SSH operations (exec, write_file, read_file, read_tail, stat, list_directory), \
                 by outcome: ok, or the error's kind",
                &["connector", "host", "operation", "outcome"],
            )?,
            denied: counter(
                "flyte_connector_ssh_denied_total",
                "SSH connections refused before one was made, by reason: rule \
                 (ssh.allowed_hosts), address (an internal address no rule names), host_key",
                &["connector", "host", "reason"],
            )?,
            named: Arc::default(),
        })
    }

    /// The label of `destination` (`host:port`) for `connector`.
    fn host_label(&self, connector: &Arc<str>, destination: &str) -> String {
        let mut named = self.named.lock().unwrap_or_else(PoisonError::into_inner);
        let hosts = named.entry(Arc::clone(connector)).or_default();
        if hosts.contains(destination) {
            return destination.to_owned();
        }
        if hosts.len() < MAX_NAMED_HOSTS {
            hosts.insert(destination.to_owned());
            return destination.to_owned();
        }
        OTHER_HOSTS.to_owned()
    }

    pub(super) fn connected(&self, connector: &Arc<str>, destination: &str) {
        let host = self.host_label(connector, destination);
        self.connections
            .with_label_values(&[connector.as_ref(), host.as_str()])
            .inc();
    }

    pub(super) fn operation(
        &self,
        connector: &Arc<str>,
        destination: &str,
        operation: Operation,
        outcome: &str,
    ) {
        let host = self.host_label(connector, destination);
        self.operations
            .with_label_values(&[
                connector.as_ref(),
                host.as_str(),
                operation.label(),
                outcome,
            ])
            .inc();
    }

    pub(super) fn denied(&self, connector: &Arc<str>, destination: &str, reason: &str) {
        let host = self.host_label(connector, destination);
        self.denied
            .with_label_values(&[connector.as_ref(), host.as_str(), reason])
            .inc();
    }
}
