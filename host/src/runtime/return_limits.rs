//! The most a guest may return from one call. A connector that returns more
//! fails that call (INTERNAL, naming the limit) before the host converts or
//! forwards anything, so one connector cannot make the server hold or send
//! hundreds of megabytes.

use super::bindings::wit;
use crate::connector::ConnectorError;

/// Size limits, in bytes, of what a guest returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnLimits {
    /// The resource meta `create` returns (the client stores it with the task).
    pub resource_meta: usize,
    /// The outputs `get` returns: their JSON values and literal types.
    pub outputs: usize,
    /// The `custom_info` JSON `get` returns.
    pub custom_info: usize,
    /// One page of log lines.
    pub log_page: usize,
    /// The metric results of one `get_metrics` call (their JSON data).
    pub metrics: usize,
}

impl Default for ReturnLimits {
    fn default() -> Self {
        Self {
            resource_meta: 256 << 10,
            outputs: 2 << 20,
            custom_info: 256 << 10,
            log_page: 2 << 20,
            metrics: 2 << 20,
        }
    }
}

fn check(what: &'static str, size: usize, limit: usize) -> Result<(), ConnectorError> {
    if size > limit {
        Err(ConnectorError::TooLarge { what, size, limit })
    } else {
        Ok(())
    }
}

impl ReturnLimits {
    pub(super) fn check_resource_meta(&self, meta: &[u8]) -> Result<(), ConnectorError> {
        check("a resource meta", meta.len(), self.resource_meta)
    }

    pub(super) fn check_resource(&self, resource: &wit::Resource) -> Result<(), ConnectorError> {
        let outputs: usize = resource
            .outputs
            .iter()
            .flatten()
            .map(|o| o.name.len() + o.value.len() + o.literal_type.as_ref().map_or(0, String::len))
            .sum();
        check("outputs", outputs, self.outputs)?;
        let custom_info = resource.custom_info.as_ref().map_or(0, String::len);
        check("custom_info", custom_info, self.custom_info)
    }

    pub(super) fn check_log_page(&self, page: &wit::LogsPage) -> Result<(), ConnectorError> {
        let size = page.lines.iter().map(String::len).sum::<usize>() + page.next_token.len();
        check("a log page", size, self.log_page)
    }

    pub(super) fn check_metrics(
        &self,
        results: &[wit::MetricResult],
    ) -> Result<(), ConnectorError> {
        let size = results.iter().map(|r| r.metric.len() + r.data.len()).sum();
        check("metrics", size, self.metrics)
    }
}
