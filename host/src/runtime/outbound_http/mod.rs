//! Outbound HTTP: the capability a connector is granted by its manifest.
//! Everything about it lives here — the grant (`allowed_hosts` parsed into
//! [`rules`], and the `[http]` limits, both read once at load), the state
//! each call's store carries ([`CallHttp`]), the linker setup, and the
//! [`policy`] every request goes through.

mod policy;
mod rules;

use std::{sync::Arc, time::Duration};

use wasmtime::component::Linker;
use wasmtime_wasi_http::{RequestOptions, WasiHttpCtx};

pub(super) use self::policy::OutboundPolicy;
use self::rules::HostRule;
use crate::{manifest::Manifest, metrics::OutboundMetrics};

/// How long to wait for a connection, unless the manifest says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the first byte of a response.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait between bytes of a response body.
pub const DEFAULT_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response body a connector may receive.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// Timeouts and the response cap of a plugin's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HttpLimits {
    pub(super) connect_timeout: Duration,
    pub(super) first_byte_timeout: Duration,
    pub(super) between_bytes_timeout: Duration,
    pub(super) max_response_bytes: u64,
}

impl HttpLimits {
    /// The options a request is sent with: what the guest asked for, capped
    /// by these limits.
    pub(super) fn apply(&self, asked: Option<RequestOptions>) -> RequestOptions {
        let asked = asked.unwrap_or_default();
        let capped =
            |asked: Option<Duration>, limit: Duration| Some(asked.map_or(limit, |a| a.min(limit)));
        RequestOptions {
            connect_timeout: capped(asked.connect_timeout, self.connect_timeout),
            first_byte_timeout: capped(asked.first_byte_timeout, self.first_byte_timeout),
            between_bytes_timeout: capped(asked.between_bytes_timeout, self.between_bytes_timeout),
        }
    }
}

/// What a plugin's manifest grants: the hosts it may call and the limits
/// of its requests.
#[derive(Debug, Clone)]
pub(super) struct HttpGrant {
    rules: Arc<[HostRule]>,
    pub(super) limits: HttpLimits,
}

impl HttpGrant {
    /// Parses the manifest's `allowed_hosts` and `[http]`; an invalid rule
    /// is an error naming it.
    pub(super) fn from_manifest(manifest: &Manifest) -> Result<Self, String> {
        let rules = manifest
            .allowed_hosts
            .iter()
            .map(|rule| HostRule::parse(rule).map_err(|err| err.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = &manifest.http;
        Ok(Self {
            rules: rules.into(),
            limits: HttpLimits {
                connect_timeout: settings.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                first_byte_timeout: settings
                    .first_byte_timeout
                    .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT),
                between_bytes_timeout: settings
                    .between_bytes_timeout
                    .unwrap_or(DEFAULT_BETWEEN_BYTES_TIMEOUT),
                max_response_bytes: settings
                    .max_response_bytes
                    .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            },
        })
    }

    /// Whether some rule allows `scheme://host:port`.
    pub(super) fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.allows(scheme, host, port))
    }

    /// The policy the calls of `connector` share.
    pub(super) fn policy(&self, connector: Arc<str>, metrics: OutboundMetrics) -> OutboundPolicy {
        OutboundPolicy::new(connector, self.clone(), metrics)
    }
}

/// The outbound-HTTP state of one call's store.
pub(super) struct CallHttp {
    pub(super) ctx: WasiHttpCtx,
    pub(super) policy: OutboundPolicy,
}

impl CallHttp {
    pub(super) fn new(policy: &OutboundPolicy) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            policy: policy.clone(),
        }
    }
}

/// Links `wasi:http/outgoing-handler` (and its types); requests go through
/// the call's [`OutboundPolicy`].
pub(super) fn add_to_linker<T: wasmtime_wasi_http::WasiHttpView + 'static>(
    linker: &mut Linker<T>,
) -> anyhow::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_may_shorten_timeouts_not_lengthen_them() {
        let limits = HttpLimits {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            between_bytes_timeout: Duration::from_secs(60),
            max_response_bytes: 1,
        };
        let applied = limits.apply(Some(RequestOptions {
            connect_timeout: Some(Duration::from_secs(1)),
            first_byte_timeout: Some(Duration::from_secs(600)),
            between_bytes_timeout: None,
        }));
        assert_eq!(applied.connect_timeout, Some(Duration::from_secs(1)));
        assert_eq!(applied.first_byte_timeout, Some(Duration::from_secs(60)));
        assert_eq!(applied.between_bytes_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn an_invalid_rule_fails_the_grant_naming_it() {
        let manifest = Manifest {
            allowed_hosts: vec!["api.example.com".into(), "ftp://x".into()],
            ..Manifest::default()
        };
        let err = HttpGrant::from_manifest(&manifest).expect_err("invalid rule");
        assert!(err.contains("\"ftp://x\""), "{err}");
        let ok = Manifest {
            allowed_hosts: vec!["http://127.0.0.1:8080".into()],
            ..Manifest::default()
        };
        let grant = HttpGrant::from_manifest(&ok).expect("valid");
        assert!(grant.allows("http", "127.0.0.1", 8080));
        assert!(!grant.allows("http", "127.0.0.1", 80));
    }
}
