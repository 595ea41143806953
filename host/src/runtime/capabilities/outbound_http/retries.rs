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

use super::{InstanceHttp, OutboundHttp, Target, labels::OTHER_HOSTS};
use crate::runtime::capabilities::{CapabilityView, HasState, ViewOf, view_of};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "import flyte:connector/http-retries@1.3.0;",
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

/// Where `origin` points, as the policy and the outbound metrics see a
/// request's target, if it is an http(s) origin.
fn target_of(origin: &str) -> Option<Target> {
    let uri: http::Uri = origin.parse().ok()?;
    let http = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    let target = Target::of(&uri);
    (http && !target.host.is_empty()).then_some(target)
}

impl wit_interface::Host for CapabilityView<'_, InstanceHttp> {
    fn retrying(&mut self, origin: String, attempt: u32, reason: String) {
        let hooks = &mut self.state.hooks;
        let label = match target_of(&origin) {
            Some(target)
                if hooks
                    .policy()
                    .allows(target.scheme(), &target.host, target.port) =>
            {
                let shown = target.shown();
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
        let shown = |origin: &str| target_of(origin).map(|target| target.shown());
        assert_eq!(
            shown("https://api.example.com"),
            Some("https://api.example.com:443".into())
        );
        assert_eq!(
            shown("http://127.0.0.1:8080/ignored?x=1"),
            Some("http://127.0.0.1:8080".into())
        );
        assert_eq!(shown("ftp://example.com"), None);
        assert_eq!(shown("not an origin"), None);
    }
}
