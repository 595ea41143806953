//! Outbound HTTP policy: a connector may call only the hosts its manifest
//! allows. Everything else is answered with `HTTP-request-denied` before any
//! connection is made.

use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The hosts one plugin may reach.
#[derive(Debug, Clone, Default)]
pub(super) struct OutboundPolicy {
    allowed_hosts: Arc<[String]>,
    connector: Arc<str>,
}

impl OutboundPolicy {
    pub(super) fn new(allowed_hosts: &[String], connector: Arc<str>) -> Self {
        Self {
            allowed_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            connector,
        }
    }

    /// Whether `host` matches an allowed name exactly or a `*.suffix` pattern.
    pub(super) fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts
            .iter()
            .any(|allowed| match allowed.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1),
                None => *allowed == host,
            })
    }
}

/// What `send_request` hands back: the response and a future reporting
/// errors of the response body.
type Sent = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _body_errors: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let host = request.uri().host().unwrap_or_default().to_owned();
        if !self.allows(&host) {
            tracing::warn!(
                connector = %self.connector,
                host = %host,
                "outbound HTTP denied: host is not in the plugin's allowed_hosts"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        tracing::debug!(connector = %self.connector, host = %host, "outbound HTTP request");
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> OutboundPolicy {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        OutboundPolicy::new(&hosts, Arc::from("test"))
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        assert!(!policy(&[]).allows("example.com"));
    }

    #[test]
    fn exact_hosts_match_case_insensitively() {
        let p = policy(&["API.example.com"]);
        assert!(p.allows("api.example.com"));
        assert!(p.allows("api.example.com."));
        assert!(!p.allows("example.com"));
        assert!(!p.allows("evil-api.example.com"));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let p = policy(&["*.example.com"]);
        assert!(p.allows("a.example.com"));
        assert!(p.allows("a.b.example.com"));
        assert!(!p.allows("example.com"));
        assert!(!p.allows("badexample.com"));
    }
}
