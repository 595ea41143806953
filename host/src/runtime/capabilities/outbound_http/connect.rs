//! New connections of a plugin's pooled client: resolve, judge the
//! target's addresses ([`AddressPolicy`]) and connect (to the target, or to
//! the proxy and through a `CONNECT` tunnel to the judged address), then
//! TLS for https targets with ALPN offering HTTP/2, each within the
//! request's connect timeout, each counted.
//!
//! The pool calls the connector with nothing but the target's URI, so what
//! a connection is made for (its connect timeout, the connector and host
//! labels) reaches it through the [`REQUEST`] task-local the request is sent
//! in, as Spin does. A connection outlives the request that made it, and
//! only the pool's key (scheme and authority) decides who reuses it.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection},
    rt::TokioIo,
};
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use wasmtime_wasi_http::Error;

use super::super::egress::{AddressPolicy, Resolved};
use super::metrics::OutboundMetrics;
use super::{
    DEFAULT_CONNECT_TIMEOUT, Target,
    labels::{Denial, HostLabels},
    proxy::{Proxy, ProxySettings, Route},
    trust::{TlsProfile, describe_tls_error, find_tls_error},
};

/// The longest answer to a `CONNECT` a proxy may give before the tunnel.
const MAX_CONNECT_ANSWER: usize = 16 << 10;

tokio::task_local! {
    /// What the request being sent needs of a new connection.
    pub(super) static REQUEST: RequestScope;
}

/// One request, as a new connection made for it sees it.
#[derive(Clone)]
pub(super) struct RequestScope {
    pub(super) connect_timeout: Duration,
    /// The connector's name, a metric label.
    pub(super) connector: Arc<str>,
    /// The target's host label (bounded per connector).
    pub(super) host_label: String,
    /// The target as logs name it: `scheme://host:port`.
    pub(super) shown: String,
    pub(super) progress: Arc<ConnectProgress>,
}

/// Whether a connection was made for a request, and when: the first-byte
/// timeout counts from when its connection was there.
#[derive(Debug, Default)]
pub(super) struct ConnectProgress(Mutex<Progress>);

/// The states of [`ConnectProgress`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// No new connection was started for the request (a pooled one served).
    #[default]
    Pooled,
    /// A new connection is being made, since then.
    Connecting(Instant),
    /// The new connection was there at that moment.
    Connected(Instant),
}

impl ConnectProgress {
    pub(super) fn get(&self) -> Progress {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, progress: Progress) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = progress;
    }
}

/// Why a new connection failed: what the guest is told. Cloneable, so the
/// pool's error can hand it on.
#[derive(Debug, Clone, thiserror::Error)]
pub(in crate::runtime::capabilities) enum ConnectError {
    #[error("cannot resolve {0}")]
    Dns(String),
    #[error("connection refused")]
    Refused,
    #[error("connection timed out")]
    Timeout,
    #[error("destination unavailable")]
    Unavailable,
    /// The target's host resolved only to addresses it may not reach.
    #[error("{0}")]
    AddressRefused(String),
    /// Anything else, in words naming the host (TLS, the proxy).
    #[error("{0}")]
    Described(String),
}

impl ConnectError {
    /// The wasi:http error the guest sees.
    pub(super) fn to_wasi(&self) -> Error {
        match self {
            Self::Dns(_) => Error::DnsError {
                rcode: Some("address not available".to_owned()),
                info_code: None,
            },
            Self::Refused => Error::ConnectionRefused,
            Self::Timeout => Error::ConnectionTimeout,
            Self::Unavailable => Error::DestinationUnavailable,
            Self::AddressRefused(message) | Self::Described(message) => {
                Error::InternalError(Some(message.clone()))
            }
        }
    }
}

/// Makes a plugin's new connections.
#[derive(Clone)]
pub(in crate::runtime::capabilities) struct Connector(Arc<Shared>);

struct Shared {
    tls: TlsProfile,
    proxy: Arc<ProxySettings>,
    addresses: AddressPolicy,
    labels: Arc<HostLabels>,
    metrics: OutboundMetrics,
}

impl Connector {
    pub(super) fn new(
        tls: TlsProfile,
        proxy: Arc<ProxySettings>,
        addresses: AddressPolicy,
        labels: Arc<HostLabels>,
        metrics: OutboundMetrics,
    ) -> Self {
        Self(Arc::new(Shared {
            tls,
            proxy,
            addresses,
            labels,
            metrics,
        }))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        // Read now: the pool may finish this connection in a task of its own.
        let scope = REQUEST.try_with(RequestScope::clone).ok();
        let shared = Arc::clone(&self.0);
        Box::pin(async move {
            let timeout = scope
                .as_ref()
                .map_or(DEFAULT_CONNECT_TIMEOUT, |s| s.connect_timeout);
            if let Some(scope) = &scope {
                scope.progress.set(Progress::Connecting(Instant::now()));
            }
            let connected = tokio::time::timeout(timeout, shared.connect(&target, scope.as_ref()))
                .await
                .unwrap_or(Err(ConnectError::Timeout))?;
            if let Some(scope) = &scope {
                scope.progress.set(Progress::Connected(Instant::now()));
                shared
                    .metrics
                    .connections
                    .with_label_values(&[scope.connector.as_ref(), scope.host_label.as_str()])
                    .inc();
            }
            Ok(TokioIo::new(connected))
        })
    }
}

impl Shared {
    async fn connect(
        &self,
        target: &Uri,
        scope: Option<&RequestScope>,
    ) -> Result<Stream, ConnectError> {
        let target = Target::of(target);
        let authority = target.authority();
        let Target { https, port, .. } = target;
        let host = target.host.clone();
        let route = self
            .proxy
            .route(if https { "https" } else { "http" }, &host, port);
        let (tcp, proxied) = match route {
            Route::Direct => {
                let addresses = self.resolve(&target, scope).await?;
                (tcp_connect(&addresses, &authority).await?, false)
            }
            Route::Proxy(proxy) => {
                let mut tcp = match lookup(&proxy.host, proxy.port, &proxy.authority).await {
                    Ok(addresses) => tcp_connect(&addresses, &proxy.authority).await,
                    Err(err) => Err(err),
                }
                .map_err(|err| {
                    ConnectError::Described(format!(
                        "cannot reach the proxy {}: {err}",
                        proxy.shown
                    ))
                })?;
                if https {
                    // The proxy is asked for the address judged here, not
                    // the name, which it could resolve anew.
                    let tunnel_to = if self.addresses.checks(&target) {
                        let judged = self.resolve(&target, scope).await?;
                        judged
                            .first()
                            .map_or(authority.clone(), ToString::to_string)
                    } else {
                        authority.clone()
                    };
                    tunnel(&mut tcp, proxy, &tunnel_to).await?;
                }
                (tcp, !https)
            }
        };
        if !https {
            return Ok(Stream::Plain { tcp, proxied });
        }
        let server_name = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.clone()).map_err(|_| {
                ConnectError::Described(format!("{host} is not a valid TLS server name"))
            })?,
        };
        let config = self.tls.for_host(&host, port);
        match TlsConnector::from(config).connect(server_name, tcp).await {
            Ok(tls) => Ok(Stream::Tls(Box::new(tls))),
            Err(err) => Err(self.tls_failure(&authority, &err, scope)),
        }
    }

    /// The error of a failed handshake with `authority`, counted.
    fn tls_failure(
        &self,
        authority: &str,
        err: &io::Error,
        scope: Option<&RequestScope>,
    ) -> ConnectError {
        let (reason, text) = match find_tls_error(err) {
            Some(tls) => describe_tls_error(tls),
            None => ("io", err.to_string()),
        };
        if let Some(scope) = scope {
            self.metrics
                .tls_failures
                .with_label_values(&[scope.connector.as_ref(), scope.host_label.as_str(), reason])
                .inc();
        }
        ConnectError::Described(format!("TLS handshake with {authority} failed: {text}"))
    }
}

impl Connector {
    /// The addresses of `target` that a request of `scope` may reach.
    pub(super) async fn resolve(
        &self,
        target: &Target,
        scope: Option<&RequestScope>,
    ) -> Result<Vec<SocketAddr>, ConnectError> {
        self.0.resolve(target, scope).await
    }

    /// Whether `target` is judged by its addresses.
    pub(super) fn checks(&self, target: &Target) -> bool {
        self.0.addresses.checks(target)
    }
}

impl Shared {
    /// The addresses of `target` it may reach (see [`AddressPolicy`]); a
    /// refusal is counted and logged for the request of `scope`.
    async fn resolve(
        &self,
        target: &Target,
        scope: Option<&RequestScope>,
    ) -> Result<Vec<SocketAddr>, ConnectError> {
        let authority = target.authority();
        let addresses = lookup(&target.host, target.port, &authority).await?;
        match self.addresses.judge(target, addresses) {
            Resolved::Reach(addresses) => Ok(addresses),
            Resolved::Refused(refused) => {
                let message = refused.message(target);
                if let Some(scope) = scope {
                    self.labels.deny(
                        &self.metrics,
                        &scope.connector,
                        &scope.shown,
                        Denial::Address,
                        &message,
                    );
                }
                Err(ConnectError::AddressRefused(message))
            }
        }
    }
}

/// The addresses of `host:port` (`authority`).
async fn lookup(host: &str, port: u16, authority: &str) -> Result<Vec<SocketAddr>, ConnectError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| ConnectError::Dns(authority.to_owned()))?
        .collect();
    if addresses.is_empty() {
        return Err(ConnectError::Dns(authority.to_owned()));
    }
    Ok(addresses)
}

/// A TCP connection to the first of `addresses` (of `authority`) that answers.
async fn tcp_connect(addresses: &[SocketAddr], authority: &str) -> Result<TcpStream, ConnectError> {
    let mut last = ConnectError::Dns(authority.to_owned());
    for &addr in addresses {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                // Requests are written whole; waiting to coalesce only adds latency.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(err) => {
                last = match err.kind() {
                    io::ErrorKind::ConnectionRefused => ConnectError::Refused,
                    io::ErrorKind::TimedOut => ConnectError::Timeout,
                    io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                        ConnectError::Unavailable
                    }
                    _ => ConnectError::Described(format!("cannot connect to {authority}: {err}")),
                };
            }
        }
    }
    Err(last)
}

/// Asks `proxy` over `tcp` for a tunnel to `authority`.
async fn tunnel(tcp: &mut TcpStream, proxy: &Proxy, authority: &str) -> Result<(), ConnectError> {
    let broken = |err: io::Error| {
        ConnectError::Described(format!(
            "the proxy {} broke the tunnel to {authority}: {err}",
            proxy.shown
        ))
    };
    let mut ask = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(authorization) = &proxy.authorization {
        ask.extend_from_slice(b"Proxy-Authorization: ");
        ask.extend_from_slice(authorization.as_bytes());
        ask.extend_from_slice(b"\r\n");
    }
    ask.extend_from_slice(b"\r\n");
    tcp.write_all(&ask).await.map_err(broken)?;
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = tcp.read(&mut chunk).await.map_err(broken)?;
        if read == 0 {
            return Err(broken(io::ErrorKind::UnexpectedEof.into()));
        }
        answer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&answer) {
            Ok(httparse::Status::Complete(_)) => {
                let code = response.code.unwrap_or_default();
                if (200..300).contains(&code) {
                    return Ok(());
                }
                let reason = response.reason.unwrap_or_default();
                let hint = if code == 407 {
                    if proxy.authorization.is_some() {
                        ": it refused the credentials of its URL"
                    } else {
                        ": it wants credentials (http://user:password@host:port in HTTPS_PROXY)"
                    }
                } else {
                    ""
                };
                return Err(ConnectError::Described(format!(
                    "the proxy {} refused to tunnel to {authority}: {code} {reason}{hint}",
                    proxy.shown
                )));
            }
            Ok(httparse::Status::Partial) if answer.len() < MAX_CONNECT_ANSWER => {}
            Ok(httparse::Status::Partial) | Err(_) => {
                return Err(ConnectError::Described(format!(
                    "the proxy {} gave no valid answer to CONNECT {authority}",
                    proxy.shown
                )));
            }
        }
    }
}

/// A connection: plain TCP (to the target, or to a proxy that takes http
/// requests in absolute form) or TLS.
pub(in crate::runtime::capabilities) enum Stream {
    Plain { tcp: TcpStream, proxied: bool },
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain { proxied, .. } => Connected::new().proxy(*proxied),
            Self::Tls(tls) => {
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                if h2 {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain { tcp, .. } => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain { tcp, .. } => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain { tcp, .. } => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain { tcp, .. } => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain { tcp, .. } => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain { tcp, .. } => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }
}
