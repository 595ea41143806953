//! Outbound HTTP: the capability a connector is granted by its manifest.
//!
//! - The grant: `allowed_hosts` parsed into [`rules`], the `[http]` limits
//!   and `[[http.tls]]` trust entries ([`trust`]), read once at load.
//! - One pooled keep-alive client per plugin ([`client`]), built at load and
//!   shared by all its calls: connections are reused across its calls and
//!   instances, never across plugins (a connection may carry a client
//!   certificate). It connects directly or through the server's proxy
//!   ([`proxy`]), and speaks HTTP/2 where the service offers it by ALPN
//!   ([`connect`]).
//! - The [`policy`] every request goes through: the allow-list, the limits,
//!   the response cap and the metrics, for every request.
//! - Each instance's store holds an [`InstanceHttp`]: the policy, with the
//!   connector's label and the instance's open requests. Nothing in it
//!   belongs to one call, so an instance may serve several calls of one
//!   tenant (see `call::warm`).
//! - [`retries`]: the `http-retries` interface, where a guest SDK tells the
//!   host it repeats a request, counted per connector and host.
//! - The allow-list's rules and the addresses a connection would reach are
//!   judged as for every capability that connects (`egress`); [`labels`]
//!   bounds the hosts its [`metrics`] name.

mod client;
mod connect;
mod labels;
mod metrics;
mod policy;
mod proxy;
mod retries;
mod trust;
mod waits;

pub use self::retries::wit_interface as http_retries_interface;
pub use self::waits::wit_interface as waits_interface;

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;
use wasmtime::{
    StoreContextMut,
    component::{Linker, Resource},
};
use wasmtime_wasi::p2::IoError;
use wasmtime_wasi_http::{
    RequestOptions, WasiHttp, WasiHttpCtx, WasiHttpCtxView,
    p2::bindings::http::{outgoing_handler, types::ErrorCode},
};

use self::policy::InstanceHooks;
use self::{
    client::PooledClient, labels::HostLabels, metrics::OutboundMetrics, policy::OutboundPolicy,
    trust::TlsProfile,
};
pub(in crate::runtime::capabilities) use self::{
    connect::Connector, proxy::ProxySettings, trust::PlatformRoots,
};
use super::capability::{Capability, GrantError, HasState, InstanceScope, LoadScope};
use super::config_error::ConfigError;
use super::egress::{AddressPolicy, Endpoint, HostRule, Protocol, authority};
use crate::manifest;

/// How long to wait for a connection, unless the manifest says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the first byte of a response.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait between bytes of a response body.
pub const DEFAULT_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response body a connector may receive.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// Requests one call may have open at once (sent, their response bodies
/// not yet read or dropped).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 32;
/// The most `http.max_concurrent_requests` may allow.
const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// Timeouts and the response cap of a plugin's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HttpLimits {
    pub(super) connect_timeout: Duration,
    pub(super) first_byte_timeout: Duration,
    pub(super) between_bytes_timeout: Duration,
    pub(super) max_response_bytes: u64,
    pub(super) max_concurrent_requests: usize,
}

/// The timeouts one request is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timeouts {
    pub(super) connect: Duration,
    pub(super) first_byte: Duration,
    pub(super) between_bytes: Duration,
}

impl HttpLimits {
    /// The timeouts of a request: what the guest asked for, capped by these
    /// limits.
    pub(super) fn apply(&self, asked: Option<RequestOptions>) -> Timeouts {
        let asked = asked.unwrap_or_default();
        let capped =
            |asked: Option<Duration>, limit: Duration| asked.map_or(limit, |a| a.min(limit));
        Timeouts {
            connect: capped(asked.connect_timeout, self.connect_timeout),
            first_byte: capped(asked.first_byte_timeout, self.first_byte_timeout),
            between_bytes: capped(asked.between_bytes_timeout, self.between_bytes_timeout),
        }
    }
}

/// Where a request goes, as the allow-list, the pool and the connector
/// see it alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) https: bool,
    /// Lower case, without brackets or a trailing dot.
    pub(super) host: String,
    /// The URI's, else the scheme's default.
    pub(super) port: u16,
}

impl Target {
    /// The target of `uri` (https unless it says `http`).
    pub(super) fn of(uri: &http::Uri) -> Self {
        let https = !uri
            .scheme_str()
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http"));
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Self { https, host, port }
    }

    pub(super) fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// `host:port`.
    pub(super) fn authority(&self) -> String {
        authority(&self.host, self.port)
    }

    /// `scheme://host:port`, as logs and metric labels name it.
    pub(super) fn shown(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority())
    }
}

impl Endpoint for Target {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn scheme(&self) -> &'static str {
        Target::scheme(self)
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn described(&self) -> String {
        format!("outbound HTTP to {}", self.shown())
    }

    fn rule_naming(&self, ip: &str) -> String {
        format!("{}://{ip}:{}", Target::scheme(self), self.port)
    }
}

/// The flags of outbound HTTP.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HttpArgs {
    /// More CA certificates (a PEM bundle) that every connector's outbound
    /// TLS trusts, beside the system's (SSL_CERT_FILE, SSL_CERT_DIR).
    #[arg(long, env = "FLYTE_CONNECT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The server-wide settings of outbound HTTP.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// More CA certificates (PEM) every plugin's outbound TLS trusts,
    /// beside the system's; relative to where the server started.
    pub ca_file: Option<PathBuf>,
}

/// The connections the host makes on a plugin's behalf to endpoints the
/// operator configured (object stores): the platform's CA roots and
/// `ca_file`'s (manifest key `key`), the proxies of the server's
/// environment, every address reachable, counted by their own user.
pub(in crate::runtime::capabilities) fn operator_endpoints(
    platform: &PlatformRoots,
    proxy: Arc<ProxySettings>,
    key: &str,
    ca_file: Option<&std::path::Path>,
    load: &mut LoadScope<'_>,
) -> Result<Connector, GrantError> {
    let tls = TlsProfile::with_ca_file(platform, key, ca_file, load)?;
    let metrics = OutboundMetrics::unexported()
        .map_err(|err| GrantError::invalid(key, format!("counters: {err}")))?;
    Ok(Connector::new(
        tls,
        proxy,
        AddressPolicy::any(),
        Arc::default(),
        metrics,
    ))
}

/// Outbound HTTP, the capability: what it reads of the platform once.
pub struct OutboundHttp {
    /// The platform's CA roots, read once at start.
    roots: PlatformRoots,
    /// `--ca-file`: more roots every plugin trusts, read at each load.
    ca_file: Option<PathBuf>,
    /// The proxies of the server's environment, read once at start.
    proxy: Arc<ProxySettings>,
    metrics: OutboundMetrics,
    /// The hosts named in metric labels, per connector, for the life of
    /// the process.
    labels: Arc<HostLabels>,
}

/// The `[http]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    connect_timeout_seconds: Option<f64>,
    first_byte_timeout_seconds: Option<f64>,
    between_bytes_timeout_seconds: Option<f64>,
    max_response_mb: Option<u64>,
    max_concurrent_requests: Option<usize>,
    #[serde(default)]
    tls: Vec<trust::TlsSection>,
}

/// What a plugin's manifest grants: the hosts it may call, the limits of its
/// requests, and the client that sends them.
#[derive(Debug, Clone)]
pub struct HttpGrant {
    policy: OutboundPolicy,
}

/// `key = secs` of `[http]` as a duration, `default` when absent.
fn timeout(key: &str, secs: Option<f64>, default: Duration) -> Result<Duration, GrantError> {
    manifest::seconds(key, secs)
        .map(|secs| secs.unwrap_or(default))
        .map_err(|reason| GrantError::invalid(key, reason))
}

impl HttpSection {
    /// The limits this section sets, the defaults where it sets none.
    fn limits(&self) -> Result<HttpLimits, GrantError> {
        Ok(HttpLimits {
            connect_timeout: timeout(
                "http.connect_timeout_seconds",
                self.connect_timeout_seconds,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            first_byte_timeout: timeout(
                "http.first_byte_timeout_seconds",
                self.first_byte_timeout_seconds,
                DEFAULT_FIRST_BYTE_TIMEOUT,
            )?,
            between_bytes_timeout: timeout(
                "http.between_bytes_timeout_seconds",
                self.between_bytes_timeout_seconds,
                DEFAULT_BETWEEN_BYTES_TIMEOUT,
            )?,
            max_response_bytes: match self.max_response_mb {
                None => DEFAULT_MAX_RESPONSE_BYTES,
                Some(mb) => mb
                    .checked_mul(1024 * 1024)
                    .filter(|&bytes| bytes > 0)
                    .ok_or_else(|| {
                        GrantError::invalid("http.max_response_mb", format!("{mb} is out of range"))
                    })?,
            },
            max_concurrent_requests: match self.max_concurrent_requests {
                None => DEFAULT_MAX_CONCURRENT_REQUESTS,
                Some(n @ 1..=MAX_CONCURRENT_REQUESTS) => n,
                Some(n) => {
                    return Err(GrantError::invalid(
                        "http.max_concurrent_requests",
                        format!("{n} is out of range (1 to {MAX_CONCURRENT_REQUESTS})"),
                    ));
                }
            },
        })
    }
}

impl Capability for OutboundHttp {
    const MANIFEST_KEYS: &'static [&'static str] = &["allowed_hosts", "http"];
    type Args = HttpArgs;
    type Config = HttpConfig;
    type Grant = HttpGrant;
    type State = InstanceHttp;

    fn configure(args: Self::Args) -> Result<Self::Config, ConfigError> {
        Ok(HttpConfig {
            ca_file: args.ca_file,
        })
    }

    /// Reads the platform's CA roots and the proxies of the server's
    /// environment; an unreadable `ca_file` or an invalid proxy URL stops
    /// start-up rather than every load.
    fn new(
        config: &Self::Config,
        registry: &crate::metrics::MetricRegistry,
    ) -> anyhow::Result<Self> {
        let proxy = ProxySettings::from_env().map_err(anyhow::Error::msg)?;
        if let Some(summary) = proxy.summary() {
            tracing::info!("{summary}");
        }
        let roots = PlatformRoots::load();
        // Relative to where the server started, not to a manifest.
        let ca_file = config
            .ca_file
            .as_deref()
            .map(std::path::absolute)
            .transpose()
            .map_err(|err| anyhow::anyhow!("--ca-file: {err}"))?;
        if let Some(path) = &ca_file {
            TlsProfile::check_ca_file(&roots, path)?;
        }
        Ok(Self {
            roots,
            ca_file,
            proxy: Arc::new(proxy),
            metrics: OutboundMetrics::register(registry)?,
            labels: Arc::default(),
        })
    }

    fn grant(&self, load: &mut LoadScope<'_>) -> Result<Self::Grant, GrantError> {
        let rules: Arc<[HostRule]> = load
            .section::<Vec<String>>("allowed_hosts")?
            .unwrap_or_default()
            .iter()
            .map(|rule| {
                HostRule::parse(rule)
                    .map_err(|err| GrantError::invalid("allowed_hosts", err.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let section: HttpSection = load.section("http")?.unwrap_or_default();
        let limits = section.limits()?;
        let tls = TlsProfile::new(&self.roots, self.ca_file.as_deref(), &section.tls, load)?;
        let connector = Connector::new(
            tls,
            Arc::clone(&self.proxy),
            AddressPolicy::new(Arc::clone(&rules)),
            Arc::clone(&self.labels),
            self.metrics.clone(),
        );
        let client = PooledClient::new(connector, Arc::clone(&self.proxy));
        Ok(HttpGrant {
            policy: OutboundPolicy::new(
                rules,
                limits,
                client,
                self.metrics.clone(),
                Arc::clone(&self.labels),
            ),
        })
    }

    fn add_to_linker<T: HasState<Self>>(linker: &mut Linker<T>) -> anyhow::Result<()> {
        let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
        outgoing_handler::add_to_linker::<T, WasiHttp>(linker, http_view::<T>)?;
        wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<T, WasiHttp>(
            linker,
            &options.into(),
            http_view::<T>,
        )?;
        // wasmtime-wasi-http 48's `http-error-code` finds only an error code
        // stored as one, but a response body's failure is stored as the
        // embedder's error: a body past the cap, a between-bytes timeout, a
        // broken connection would reach the guest with no code. Shadowed
        // with one that finds both.
        linker.allow_shadowing(true);
        let defined = linker.instance(HTTP_TYPES)?.func_wrap(
            "http-error-code",
            |mut store: StoreContextMut<'_, T>, (error,): (Resource<IoError>,)| {
                let view = store.data_mut().view();
                let error = view.table.get(&error)?;
                Ok((stream_error_code(error),))
            },
        );
        linker.allow_shadowing(false);
        defined?;
        retries::add_to_linker(linker)?;
        // Only the async world waits through `waits`, and only its engine
        // runs concurrent host functions.
        if linker.engine().get_concurrency_support() {
            waits::add_to_linker(linker)?;
        }
        Ok(())
    }

    fn instance_state(grant: &Self::Grant, instance: &InstanceScope) -> Self::State {
        InstanceHttp {
            ctx: WasiHttpCtx::new(),
            hooks: InstanceHooks::new(grant.policy.clone(), Arc::clone(&instance.connector)),
        }
    }
}

/// wasi:http's view of the store data `T`: the instance's outbound-HTTP
/// state and the shared resource table.
fn http_view<T: HasState<OutboundHttp>>(host: &mut T) -> WasiHttpCtxView<'_> {
    let view = host.view();
    WasiHttpCtxView {
        ctx: &mut view.state.ctx,
        table: view.table,
        hooks: &mut view.state.hooks,
    }
}

/// The interface whose `http-error-code` is shadowed, at the version
/// wasmtime-wasi-http 48 defines it (guests importing any 0.2.x match).
const HTTP_TYPES: &str = "wasi:http/types@0.2.12";

/// The wasi:http error code of a stream's error: one stored as a code, or
/// the host's own error a response body failed with.
fn stream_error_code(error: &IoError) -> Option<ErrorCode> {
    use wasmtime_wasi_http::Error;
    if let Some(code) = error.downcast_ref::<ErrorCode>() {
        return Some(code.clone());
    }
    let error = error.downcast_ref::<Error>()?;
    Some(match error {
        Error::ConnectionReadTimeout => ErrorCode::ConnectionReadTimeout,
        Error::ConnectionTerminated => ErrorCode::ConnectionTerminated,
        Error::HttpResponseTimeout => ErrorCode::HttpResponseTimeout,
        Error::HttpResponseBodySize(limit) => ErrorCode::HttpResponseBodySize(*limit),
        Error::HttpResponseIncomplete => ErrorCode::HttpResponseIncomplete,
        Error::HttpProtocolError => ErrorCode::HttpProtocolError,
        Error::InternalError(message) => ErrorCode::InternalError(message.clone()),
        other => ErrorCode::InternalError(Some(other.to_string())),
    })
}

/// The outbound-HTTP state of one instance's store.
pub struct InstanceHttp {
    ctx: WasiHttpCtx,
    hooks: InstanceHooks,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{manifest::Manifest, runtime::capabilities::CredentialRoots};

    fn capability() -> OutboundHttp {
        OutboundHttp {
            roots: PlatformRoots::webpki(),
            ca_file: None,
            proxy: Arc::new(ProxySettings::none()),
            metrics: OutboundMetrics::register(&crate::metrics::MetricRegistry::default())
                .expect("metrics"),
            labels: Arc::default(),
        }
    }

    fn grant(text: &str) -> Result<HttpGrant, String> {
        let manifest = Manifest::parse(text, PathBuf::from(".")).map_err(|e| format!("{e:?}"))?;
        let roots =
            CredentialRoots::new(vec![PathBuf::from("/")], vec![]).map_err(|e| e.to_string())?;
        capability()
            .grant(&mut LoadScope::new(&manifest, &roots))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn guests_may_shorten_timeouts_not_lengthen_them() {
        let limits = HttpLimits {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            between_bytes_timeout: Duration::from_secs(60),
            max_response_bytes: 1,
            max_concurrent_requests: 1,
        };
        let applied = limits.apply(Some(RequestOptions {
            connect_timeout: Some(Duration::from_secs(1)),
            first_byte_timeout: Some(Duration::from_secs(600)),
            between_bytes_timeout: None,
        }));
        assert_eq!(
            applied,
            Timeouts {
                connect: Duration::from_secs(1),
                first_byte: Duration::from_secs(60),
                between_bytes: Duration::from_secs(60),
            }
        );
    }

    #[tokio::test]
    async fn the_section_parses_and_invalid_entries_name_themselves() {
        let err = grant("allowed_hosts = [\"api.example.com\", \"ftp://x\"]").expect_err("rule");
        assert!(err.contains("\"ftp://x\""), "{err}");
        let granted = grant(
            "allowed_hosts = [\"http://127.0.0.1:8080\"]\n[http]\nconnect_timeout_seconds = 2\nmax_response_mb = 3\n",
        )
        .expect("valid");
        assert!(granted.policy.allows("http", "127.0.0.1", 8080));
        assert!(!granted.policy.allows("http", "127.0.0.1", 80));
        assert_eq!(
            granted.policy.limits().connect_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(granted.policy.limits().max_response_bytes, 3 << 20);
        for (text, named) in [
            ("[http]\nconnect_timeout = 1", "connect_timeout"),
            (
                "[http]\nfirst_byte_timeout_seconds = 0",
                "first_byte_timeout_seconds",
            ),
            ("[http]\nmax_response_mb = 0", "max_response_mb"),
            (
                "[http]\nmax_concurrent_requests = 0",
                "max_concurrent_requests",
            ),
            (
                "[[http.tls]]\nca_file = \"/nonexistent/ca.pem\"",
                "/nonexistent/ca.pem",
            ),
            (
                "[[http.tls]]\nclient_cert_file = \"c.pem\"",
                "client_key_file",
            ),
        ] {
            let err = grant(text).expect_err(text);
            assert!(err.contains(named), "{text}: {err}");
        }
    }
}
