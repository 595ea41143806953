//! The `flyte:connector/http-retries` interface (since 1.2.0): a guest SDK
//! tells the host it is repeating a request, and the host counts the retry
//! (`flyte_connector_outbound_retries_total{connector, host}`) and logs it
//! at debug. The SDK decides when to retry (`wit/fixtures/http.json`); the
//! host only keeps the count an operator watches.
//!
//! The origin comes from the guest, so it is judged before it names a
//! label: one the plugin's `allowed_hosts` does not allow, or that is not
//! an origin, counts as `_other`, and the hosts named are bounded per
//! connector as the other outbound metrics' are.

use wasmtime::component::Linker;

use super::{InstanceHttp, OutboundHttp, labels::OTHER_HOSTS};
use crate::runtime::capabilities::{CapabilityView, HasState, ViewOf, egress::authority, view_of};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "import flyte:connector/http-retries@1.2.0;",
    });
}

pub use self::generated::flyte::connector::http_retries as wit_interface;

/// Adds the interface's imports to `linker`.
pub(super) fn add_to_linker<T: HasState<OutboundHttp>>(
    linker: &mut Linker<T>,
) -> anyhow::Result<()> {
    wit_interface::add_to_linker::<T, ViewOf<OutboundHttp>>(linker, view_of::<OutboundHttp, T>)?;
    Ok(())
}

/// Longest reason kept in a log line.
const MAX_REASON: usize = 100;

/// `scheme://host:port` of `origin` as the outbound metrics name hosts,
/// if it is an http(s) origin.
fn shown_origin(origin: &str) -> Option<(String, String, u16)> {
    let url = url::Url::parse(origin).ok()?;
    let scheme = match url.scheme() {
        scheme @ ("http" | "https") => scheme.to_owned(),
        _ => return None,
    };
    let host = url.host_str()?.to_owned();
    let port = url.port_or_known_default()?;
    Some((scheme, host, port))
}

impl wit_interface::Host for CapabilityView<'_, InstanceHttp> {
    fn retrying(&mut self, origin: String, attempt: u32, reason: String) {
        let hooks = &mut self.state.hooks;
        let label = match shown_origin(&origin) {
            Some((scheme, host, port)) if hooks.policy().allows(&scheme, &host, port) => {
                let shown = format!("{scheme}://{}", authority(&host, port));
                let label = hooks.labels().retried(hooks.connector(), &shown);
                // The next request to it is the repeat, which its span says.
                hooks.announce_retry(shown, attempt);
                label
            }
            _ => OTHER_HOSTS.to_owned(),
        };
        let reason: String = reason.chars().take(MAX_REASON).collect();
        tracing::debug!(
            connector = %hooks.connector(),
            host = %label,
            attempt,
            reason = %reason,
            "retrying an outbound HTTP request"
        );
        hooks
            .metrics()
            .retries
            .with_label_values(&[hooks.connector().as_ref(), label.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_shown_as_the_outbound_metrics_name_hosts() {
        assert_eq!(
            shown_origin("https://api.example.com"),
            Some(("https".into(), "api.example.com".into(), 443))
        );
        assert_eq!(
            shown_origin("http://127.0.0.1:8080/ignored?x=1"),
            Some(("http".into(), "127.0.0.1".into(), 8080))
        );
        assert_eq!(shown_origin("ftp://example.com"), None);
        assert_eq!(shown_origin("not an origin"), None);
    }
}
