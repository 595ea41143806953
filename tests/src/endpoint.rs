//! Serving a `Router` on a free loopback port as a test needs it: plain
//! HTTP or TLS with a certificate from [`pki`](crate::pki) ([`TlsServer`],
//! optionally requiring client certificates), HTTP/1.1 and HTTP/2 or
//! HTTP/1.1 only, and what happens to connections ([`Connections`]: kept
//! alive, closed after every response, or dropped without a word once idle
//! as a load balancer does). An [`Endpoint`] keeps the [`Accepted`] record
//! of each connection: TLS or not, the HTTP version it spoke, whether it
//! presented a client certificate, whether it is closed. Every fake
//! ([`Serving`](crate::fake_http::Serving)) is served by one.

use std::{
    convert::Infallible,
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{HeaderValue, Request, Version, header::CONNECTION},
};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::{fake_http::lock, pki::Issued};

/// How a fake is served: plain HTTP or TLS, the host its URL names, the
/// HTTP versions it speaks and what it does with connections.
#[derive(Clone, Debug)]
pub struct Serve {
    tls: Option<TlsServer>,
    url_host: UrlHost,
    http1_only: bool,
    connections: Connections,
}

impl Serve {
    /// Plain HTTP/1.1 (and HTTP/2 to a client that starts with its
    /// preface), connections kept alive, URLs naming 127.0.0.1.
    pub fn plain() -> Self {
        Self {
            tls: None,
            url_host: UrlHost::Loopback,
            http1_only: false,
            connections: Connections::KeepAlive,
        }
    }

    /// TLS as `tls` says, ALPN offering `h2` and `http/1.1`, connections
    /// kept alive, URLs naming `localhost`.
    pub fn tls(tls: TlsServer) -> Self {
        Self {
            tls: Some(tls),
            url_host: UrlHost::Localhost,
            ..Self::plain()
        }
    }

    /// URLs name `host` instead.
    pub fn url_host(mut self, host: UrlHost) -> Self {
        self.url_host = host;
        self
    }

    /// HTTP/1.1 only: ALPN offers `http/1.1` alone, and a client opening
    /// with the HTTP/2 preface is refused.
    pub fn http1_only(mut self) -> Self {
        self.http1_only = true;
        self
    }

    /// Treats connections as `connections` says.
    pub fn connections(mut self, connections: Connections) -> Self {
        self.connections = connections;
        self
    }
}

impl Default for Serve {
    fn default() -> Self {
        Self::plain()
    }
}

/// The host a served fake's URL names; it listens on 127.0.0.1 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlHost {
    /// `127.0.0.1` (for a TLS fake, its certificate must name the IP).
    Loopback,
    /// `localhost`.
    Localhost,
}

impl UrlHost {
    fn name(self) -> &'static str {
        match self {
            Self::Loopback => "127.0.0.1",
            Self::Localhost => "localhost",
        }
    }
}

/// What a served fake does with its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    /// Keeps them open for as many requests as the client sends.
    KeepAlive,
    /// Closes each after its first response: HTTP/1 answers with
    /// `Connection: close`, HTTP/2 sends GOAWAY.
    CloseEach,
    /// Drops a connection once no request has been in flight on it for the
    /// given time, without telling the client (no `Connection: close`, no
    /// GOAWAY, no TLS close_notify), as a load balancer reaping idle
    /// connections does.
    DropWhenIdle(Duration),
}

/// The certificate a TLS fake presents, and whether it asks clients for
/// theirs.
#[derive(Clone)]
pub struct TlsServer {
    cert_pem: String,
    key_pem: String,
    client_auth: ClientAuth,
}

#[derive(Clone, Debug)]
enum ClientAuth {
    None,
    Optional { ca_pem: String },
    Required { ca_pem: String },
}

impl TlsServer {
    /// Presents `leaf` (from [`pki`](crate::pki)), asking for no client
    /// certificate.
    pub fn new(leaf: &Issued) -> Self {
        Self::from_pem(&leaf.cert_pem, &leaf.key_pem)
    }

    /// Presents the certificate chain `cert_pem` (leaf first) with its key
    /// `key_pem`, asking for no client certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Self {
        Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            client_auth: ClientAuth::None,
        }
    }

    /// Mutual TLS: refuses a client that presents no certificate signed by
    /// a CA of `ca_pem`.
    pub fn require_client_cert(mut self, ca_pem: &str) -> Self {
        self.client_auth = ClientAuth::Required {
            ca_pem: ca_pem.to_owned(),
        };
        self
    }

    /// Asks for a client certificate signed by a CA of `ca_pem`, serving a
    /// client that presents none too (a wrong one is still refused).
    pub fn accept_client_cert(mut self, ca_pem: &str) -> Self {
        self.client_auth = ClientAuth::Optional {
            ca_pem: ca_pem.to_owned(),
        };
        self
    }

    /// The rustls configuration, on the ring provider. Bad PEM fails the
    /// test: it is test setup.
    fn server_config(&self, http1_only: bool) -> ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("the fake's certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .expect("the fake's private key PEM");
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions the ring provider supports");
        let builder = match &self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional { ca_pem } | ClientAuth::Required { ca_pem } => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                    roots
                        .add(cert.expect("the client CA's PEM"))
                        .expect("a client CA certificate");
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match self.client_auth {
                    ClientAuth::Optional { .. } => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                builder.with_client_cert_verifier(verifier.build().expect("a client verifier"))
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .expect("the fake's certificate and key");
        config.alpn_protocols = if http1_only {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        config
    }
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// One connection a served fake accepted, as it saw it.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether it was served over TLS.
    pub tls: bool,
    /// The protocol ALPN agreed (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// Whether the client presented a certificate the fake accepted.
    pub client_certificate: bool,
    /// Why the TLS handshake failed, when it did.
    pub tls_error: Option<String>,
    /// The HTTP version of its requests (`None` before the first).
    pub version: Option<Version>,
    /// How many requests it carried.
    pub requests: usize,
    /// Whether it is closed.
    pub closed: bool,
}

/// The connections an endpoint accepted, in order. Clones share one record.
#[derive(Clone, Default)]
struct ConnectionLog(Arc<Mutex<Vec<Accepted>>>);

impl ConnectionLog {
    fn accepted(&self, peer: SocketAddr, tls: bool) -> usize {
        let mut log = lock(&self.0);
        log.push(Accepted {
            peer,
            tls,
            alpn: None,
            client_certificate: false,
            tls_error: None,
            version: None,
            requests: 0,
            closed: false,
        });
        log.len() - 1
    }

    fn update(&self, id: usize, change: impl FnOnce(&mut Accepted)) {
        if let Some(connection) = lock(&self.0).get_mut(id) {
            change(connection);
        }
    }

    fn all(&self) -> Vec<Accepted> {
        lock(&self.0).clone()
    }
}

/// A `Router` served on a free port of 127.0.0.1 as a [`Serve`] says, with
/// the record of its connections; it stops when dropped.
pub struct Endpoint {
    addr: SocketAddr,
    scheme: &'static str,
    url_host: UrlHost,
    log: ConnectionLog,
    _stop: watch::Sender<()>,
}

impl Endpoint {
    /// Binds a free port of 127.0.0.1 and serves `router` there as `how`
    /// says.
    pub async fn serve(router: Router, how: Serve) -> Self {
        Self::start(bind("endpoint").await, router, how)
    }

    /// Serves `router` on `listener` as `how` says.
    pub(crate) fn start(listener: TcpListener, router: Router, how: Serve) -> Self {
        let addr = listener.local_addr().expect("the fake's address");
        let tls = how
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(Arc::new(tls.server_config(how.http1_only))));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let log = ConnectionLog::default();
        let (stop, stopped) = watch::channel(());
        let url_host = how.url_host;
        tokio::spawn(accept(
            listener,
            Served {
                router,
                tls,
                how,
                log: log.clone(),
                stopped,
            },
        ));
        Self {
            addr,
            scheme,
            url_host,
            log,
            _stop: stop,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`, with the host
    /// the [`Serve`] chose.
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.scheme,
            self.url_host.name(),
            self.addr.port()
        )
    }

    /// The connections accepted so far, in order, TLS handshakes that
    /// failed included.
    pub fn connections(&self) -> Vec<Accepted> {
        self.log.all()
    }

    /// How many connections were accepted so far.
    pub fn connections_accepted(&self) -> usize {
        lock(&self.log.0).len()
    }

    /// The HTTP version of each connection that carried a request, in the
    /// order they were accepted.
    pub fn http_versions(&self) -> Vec<Version> {
        self.log.all().iter().filter_map(|c| c.version).collect()
    }

    /// Whether each TLS connection whose handshake completed presented a
    /// client certificate, in order.
    pub fn client_certificates(&self) -> Vec<bool> {
        self.log
            .all()
            .iter()
            .filter(|c| c.tls && c.tls_error.is_none())
            .map(|c| c.client_certificate)
            .collect()
    }
}

/// What every connection of an endpoint shares.
#[derive(Clone)]
struct Served {
    router: Router,
    tls: Option<TlsAcceptor>,
    how: Serve,
    log: ConnectionLog,
    /// Changes (with an error) when the endpoint drops.
    stopped: watch::Receiver<()>,
}

/// A listener on a free port of 127.0.0.1; `name` names the fake when
/// none can be bound.
pub(crate) async fn bind(name: &str) -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind the fake {name} port: {e}"))
}

async fn accept(listener: TcpListener, served: Served) {
    let mut stopped = served.stopped.clone();
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small requests and answers: no waiting for a full segment.
                let _ = stream.set_nodelay(true);
                let id = served.log.accepted(peer, served.tls.is_some());
                tokio::spawn(connection(stream, id, served.clone()));
            }
            // Out of file descriptors, say: let some close before retrying.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn connection(stream: TcpStream, id: usize, served: Served) {
    match served.tls.clone() {
        None => serve_http(stream, id, &served).await,
        Some(acceptor) => {
            let mut stopped = served.stopped.clone();
            let handshake = tokio::select! {
                _ = stopped.changed() => return,
                handshake = acceptor.accept(stream) => handshake,
            };
            match handshake {
                Ok(stream) => {
                    let (_, session) = stream.get_ref();
                    let alpn = session
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                    let client_certificate =
                        session.peer_certificates().is_some_and(|c| !c.is_empty());
                    served.log.update(id, |c| {
                        c.alpn = alpn;
                        c.client_certificate = client_certificate;
                    });
                    serve_http(stream, id, &served).await;
                }
                Err(e) => served.log.update(id, |c| c.tls_error = Some(e.to_string())),
            }
        }
    }
    served.log.update(id, |c| c.closed = true);
}

/// Requests in flight on one connection and when the last one began or
/// ended, for [`Connections::DropWhenIdle`]; and the signal to close it
/// gracefully, for [`Connections::CloseEach`] over HTTP/2.
struct Activity {
    busy: Mutex<(usize, Instant)>,
    close: Notify,
}

impl Activity {
    fn begin(&self) {
        let mut busy = lock(&self.busy);
        *busy = (busy.0 + 1, Instant::now());
    }

    fn end(&self) {
        let mut busy = lock(&self.busy);
        *busy = (busy.0.saturating_sub(1), Instant::now());
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = {
                let (in_flight, since) = *lock(&self.busy);
                if in_flight > 0 {
                    idle
                } else {
                    match idle.checked_sub(since.elapsed()) {
                        Some(left) if !left.is_zero() => left,
                        _ => return,
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

async fn serve_http<I>(io: I, id: usize, served: &Served)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        busy: Mutex::new((0, Instant::now())),
        close: Notify::new(),
    });
    let close_each = served.how.connections == Connections::CloseEach;
    let service = {
        let (router, log, activity) = (served.router.clone(), served.log.clone(), activity.clone());
        service_fn(move |request: Request<Incoming>| {
            let (router, log, activity) = (router.clone(), log.clone(), activity.clone());
            async move {
                let version = request.version();
                log.update(id, |c| {
                    c.version.get_or_insert(version);
                    c.requests += 1;
                });
                activity.begin();
                let answered = router.oneshot(request).await;
                activity.end();
                let Ok(mut response) = answered;
                if close_each {
                    if version == Version::HTTP_2 {
                        activity.close.notify_one();
                    } else {
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if served.how.http1_only {
        builder = builder.http1_only();
    }
    // With a timer, hyper's default 30 s header read timeout would also
    // close idle keep-alive connections: only `DropWhenIdle` may do that.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let idle = async {
        match served.how.connections {
            Connections::DropWhenIdle(idle) => activity.idle_for(idle).await,
            _ => std::future::pending().await,
        }
    };
    let mut stopped = served.stopped.clone();
    tokio::select! {
        _ = connection.as_mut() => return,
        // Dropping the connection closes the socket without a word.
        () = idle => return,
        _ = stopped.changed() => {}
        () = activity.close.notified() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// A hyper client over TCP or rustls for the TLS fakes' and the proxy's own
/// tests: it keeps one connection and opens another once the server has
/// closed it, so a test can count connections over several requests.
#[cfg(test)]
pub(crate) mod tls_client {
    use std::{error::Error, io, net::SocketAddr, sync::Arc};

    use axum::{
        body::Body,
        http::{HeaderMap, Request, Response, StatusCode, Version, header::HOST},
    };
    use hyper::{
        body::Incoming,
        client::conn::{http1, http2},
    };
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    };
    use tokio::{
        io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
        net::TcpStream,
    };
    use tokio_rustls::{TlsConnector, client::TlsStream};

    use crate::pki::Issued;

    /// Any failure of a test request.
    pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

    /// A client configuration on ring trusting `ca_pem`, presenting
    /// `identity` when given, offering `alpn`.
    pub(crate) fn config(
        ca_pem: &str,
        identity: Option<&Issued>,
        alpn: &[&str],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.expect("a CA's PEM"))
                .expect("a CA certificate");
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions the ring provider supports")
                .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(identity) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("a client certificate's PEM"),
                    PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                        .expect("a client key's PEM"),
                )
                .expect("a client identity"),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }

    /// The rustls error `error` carries, looking through its sources and
    /// into I/O errors (whose `source` skips the error they wrap).
    pub(crate) fn rustls_error(error: &(dyn Error + 'static)) -> Option<rustls::Error> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<rustls::Error>() {
                return Some(found.clone());
            }
            if let Some(found) = error
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .and_then(|inner| rustls_error(inner))
            {
                return Some(found);
            }
            next = error.source();
        }
        None
    }

    /// A TLS session over `io` with `server_name`.
    pub(crate) async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
        io: S,
        config: &Arc<ClientConfig>,
        server_name: &str,
    ) -> io::Result<TlsStream<S>> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        TlsConnector::from(config.clone()).connect(name, io).await
    }

    /// How the TLS session with the server at `addr` fails: at the
    /// handshake, or (TLS 1.3 refusing a client certificate after the
    /// client finished) on the first read after a request.
    pub(crate) async fn refusal(addr: SocketAddr, config: &Arc<ClientConfig>) -> rustls::Error {
        let tcp = TcpStream::connect(addr).await.expect("connect to the fake");
        let failure = match tls(tcp, config, "localhost").await {
            Err(e) => e,
            Ok(mut stream) => {
                let _ = stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await;
                let mut answer = Vec::new();
                match stream.read_to_end(&mut answer).await {
                    Err(e) => e,
                    Ok(_) => panic!("the fake answered: {}", String::from_utf8_lossy(&answer)),
                }
            }
        };
        rustls_error(&failure).unwrap_or_else(|| panic!("not a TLS error: {failure}"))
    }

    /// Sends requests on one connection.
    pub(crate) enum Sender {
        Http1(http1::SendRequest<String>),
        Http2(http2::SendRequest<String>),
    }

    impl Sender {
        /// An HTTP/2 connection over `io` when `h2`, HTTP/1.1 otherwise.
        pub(crate) async fn handshake<I>(io: I, h2: bool) -> Result<Self, BoxError>
        where
            I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        {
            let io = TokioIo::new(io);
            if h2 {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(connection);
                Ok(Self::Http2(sender))
            } else {
                let (sender, connection) = http1::handshake(io).await?;
                tokio::spawn(connection.with_upgrades());
                Ok(Self::Http1(sender))
            }
        }

        /// Whether the connection is gone.
        pub(crate) fn is_closed(&self) -> bool {
            match self {
                Self::Http1(sender) => sender.is_closed(),
                Self::Http2(sender) => sender.is_closed(),
            }
        }

        /// Sends `request` once the connection can take it.
        pub(crate) async fn send(
            &mut self,
            request: Request<String>,
        ) -> Result<Response<Incoming>, BoxError> {
            Ok(match self {
                Self::Http1(sender) => {
                    sender.ready().await?;
                    sender.send_request(request).await?
                }
                Self::Http2(sender) => {
                    sender.ready().await?;
                    sender.send_request(request).await?
                }
            })
        }
    }

    /// A response, read whole.
    #[derive(Debug)]
    pub(crate) struct Reply {
        pub(crate) status: StatusCode,
        pub(crate) version: Version,
        pub(crate) headers: HeaderMap,
        pub(crate) body: String,
    }

    impl Reply {
        /// Reads `response` whole.
        pub(crate) async fn read(response: Response<Incoming>) -> Result<Self, BoxError> {
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(Body::new(body), usize::MAX).await?;
            Ok(Self {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
    }

    /// A client of one server keeping one connection, reopened when the
    /// server has closed it.
    pub(crate) struct TestClient {
        addr: SocketAddr,
        tls: Option<(Arc<ClientConfig>, String)>,
        h2c: bool,
        sender: Option<Sender>,
        /// Connections opened so far.
        pub(crate) opened: usize,
    }

    impl TestClient {
        /// HTTP/1.1 over TCP to `addr`.
        pub(crate) fn plain(addr: SocketAddr) -> Self {
            Self {
                addr,
                tls: None,
                h2c: false,
                sender: None,
                opened: 0,
            }
        }

        /// HTTP/2 with prior knowledge over TCP to `addr`.
        pub(crate) fn h2c(addr: SocketAddr) -> Self {
            Self {
                h2c: true,
                ..Self::plain(addr)
            }
        }

        /// TLS with `config` to `server_name` at `addr`, HTTP/2 when ALPN
        /// agrees on it.
        pub(crate) fn tls(addr: SocketAddr, config: Arc<ClientConfig>, server_name: &str) -> Self {
            Self {
                tls: Some((config, server_name.to_owned())),
                ..Self::plain(addr)
            }
        }

        /// Whether there is no open connection.
        pub(crate) fn is_closed(&self) -> bool {
            self.sender.as_ref().is_none_or(Sender::is_closed)
        }

        async fn open(&self) -> Result<Sender, BoxError> {
            let tcp = TcpStream::connect(self.addr).await?;
            match &self.tls {
                None => Sender::handshake(tcp, self.h2c).await,
                Some((config, name)) => {
                    let stream = tls(tcp, config, name).await?;
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    Sender::handshake(stream, h2).await
                }
            }
        }

        /// `GET path`, on the open connection or a new one.
        pub(crate) async fn get(&mut self, path: &str) -> Result<Reply, BoxError> {
            let sender = match self.sender.take() {
                Some(sender) if !sender.is_closed() => sender,
                _ => {
                    let sender = self.open().await?;
                    self.opened += 1;
                    sender
                }
            };
            let sender = self.sender.insert(sender);
            let (scheme, host) = match &self.tls {
                Some((_, name)) => ("https", name.as_str()),
                None => ("http", "127.0.0.1"),
            };
            let authority = format!("{host}:{}", self.addr.port());
            let request = match sender {
                // HTTP/2 takes the scheme and authority from the URI.
                Sender::Http2(_) => Request::get(format!("{scheme}://{authority}{path}")),
                Sender::Http1(_) => Request::get(path).header(HOST, authority),
            }
            .body(String::new())?;
            Reply::read(sender.send(request).await?).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::{
        Router,
        extract::State,
        http::{HeaderMap, Version, header::CONNECTION},
        response::{IntoResponse, Response},
        routing::get,
    };
    use rustls::{AlertDescription, CertificateError, Error as TlsError};
    use serde::Serialize;

    use super::{
        Connections, Endpoint, Serve, TlsServer, UrlHost,
        tls_client::{TestClient, config, refusal},
    };
    use crate::fake_http::{FakeService, Ledger, Serving};
    use crate::{eventually, pki::TestPki};

    const BOTH: &[&str] = &["h2", "http/1.1"];
    const HTTP1: &[&str] = &["http/1.1"];
    const WAIT: Duration = Duration::from_secs(5);

    fn hello() -> Router {
        Router::new().route("/", get(|| async { "hello" }))
    }

    async fn get_hello(client: &mut TestClient) -> super::tls_client::Reply {
        let reply = client.get("/").await.expect("a reply");
        assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "hello"));
        reply
    }

    #[tokio::test]
    async fn fake_http_plain_keeps_its_url_and_its_connections() {
        let endpoint = Endpoint::serve(hello(), Serve::plain()).await;
        assert_eq!(endpoint.base_url(), format!("http://{}", endpoint.addr()));
        let mut client = TestClient::plain(endpoint.addr());
        for _ in 0..3 {
            let reply = get_hello(&mut client).await;
            assert!(!reply.headers.contains_key(CONNECTION));
        }
        assert_eq!((client.opened, endpoint.connections_accepted()), (1, 1));
        assert_eq!(endpoint.http_versions(), [Version::HTTP_11]);
        let accepted = &endpoint.connections()[0];
        assert_eq!((accepted.tls, accepted.requests), (false, 3));
        assert!(endpoint.client_certificates().is_empty());

        let mut h2c = TestClient::h2c(endpoint.addr());
        get_hello(&mut h2c).await;
        assert_eq!(
            endpoint.http_versions(),
            [Version::HTTP_11, Version::HTTP_2]
        );
    }

    #[tokio::test]
    async fn fake_http_tls_answers_a_client_trusting_its_ca_in_h2_and_http1() {
        let pki = TestPki::new();
        let endpoint = Endpoint::serve(hello(), Serve::tls(TlsServer::new(&pki.server()))).await;
        let port = endpoint.addr().port();
        assert_eq!(endpoint.base_url(), format!("https://localhost:{port}"));

        let mut h2 = TestClient::tls(
            endpoint.addr(),
            config(pki.ca_pem(), None, BOTH),
            "localhost",
        );
        assert_eq!(get_hello(&mut h2).await.version, Version::HTTP_2);
        let mut h1 = TestClient::tls(
            endpoint.addr(),
            config(pki.ca_pem(), None, HTTP1),
            "localhost",
        );
        assert_eq!(get_hello(&mut h1).await.version, Version::HTTP_11);
        let mut by_ip = TestClient::tls(
            endpoint.addr(),
            config(pki.ca_pem(), None, &[]),
            "127.0.0.1",
        );
        assert_eq!(get_hello(&mut by_ip).await.version, Version::HTTP_11);

        assert_eq!(
            endpoint.http_versions(),
            [Version::HTTP_2, Version::HTTP_11, Version::HTTP_11]
        );
        let alpn: Vec<_> = endpoint.connections().into_iter().map(|c| c.alpn).collect();
        assert_eq!(alpn, [Some("h2".into()), Some("http/1.1".into()), None]);
        assert_eq!(endpoint.client_certificates(), [false, false, false]);

        let by_ip = Endpoint::serve(
            hello(),
            Serve::tls(TlsServer::new(&pki.server())).url_host(UrlHost::Loopback),
        )
        .await;
        assert_eq!(
            by_ip.base_url(),
            format!("https://127.0.0.1:{}", by_ip.addr().port())
        );
    }

    #[tokio::test]
    async fn fake_http_tls_http1_only_offers_no_h2() {
        let pki = TestPki::new();
        let how = Serve::tls(TlsServer::new(&pki.server())).http1_only();
        let endpoint = Endpoint::serve(hello(), how).await;
        let mut client = TestClient::tls(
            endpoint.addr(),
            config(pki.ca_pem(), None, BOTH),
            "localhost",
        );
        assert_eq!(get_hello(&mut client).await.version, Version::HTTP_11);
        assert_eq!(endpoint.connections()[0].alpn.as_deref(), Some("http/1.1"));

        let plain = Endpoint::serve(hello(), Serve::plain().http1_only()).await;
        let mut h2c = TestClient::h2c(plain.addr());
        assert!(h2c.get("/").await.is_err(), "HTTP/2 refused");
    }

    #[tokio::test]
    async fn fake_http_tls_untrusted_expired_and_wrong_name_leaves_are_refused() {
        let pki = TestPki::new();
        let trusting = config(pki.ca_pem(), None, BOTH);
        let refused = async |leaf| {
            let endpoint = Endpoint::serve(hello(), Serve::tls(TlsServer::new(&leaf))).await;
            let error = refusal(endpoint.addr(), &trusting).await;
            eventually(WAIT, "the fake records the failed handshake", || async {
                endpoint.connections()[0].tls_error.is_some()
            })
            .await;
            assert!(endpoint.http_versions().is_empty());
            error
        };

        let untrusted = refused(pki.untrusted_server()).await;
        assert_eq!(
            untrusted,
            TlsError::InvalidCertificate(CertificateError::UnknownIssuer)
        );
        let expired = refused(pki.expired_server()).await;
        assert!(
            matches!(
                expired,
                TlsError::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{expired:?}"
        );
        let wrong_name = refused(pki.wrong_name_server()).await;
        assert!(
            matches!(
                wrong_name,
                TlsError::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{wrong_name:?}"
        );
    }

    #[tokio::test]
    async fn fake_http_mutual_tls_refuses_a_client_without_a_certificate() {
        let pki = TestPki::new();
        let tls = TlsServer::new(&pki.server()).require_client_cert(pki.client_ca().cert_pem());
        let endpoint = Endpoint::serve(hello(), Serve::tls(tls)).await;

        let anonymous = refusal(endpoint.addr(), &config(pki.ca_pem(), None, HTTP1)).await;
        assert_eq!(
            anonymous,
            TlsError::AlertReceived(AlertDescription::CertificateRequired)
        );
        // Signed by a CA the fake does not take client certificates from.
        let stranger = pki.client("stranger");
        let stranger = refusal(
            endpoint.addr(),
            &config(pki.ca_pem(), Some(&stranger), HTTP1),
        )
        .await;
        assert!(
            matches!(stranger, TlsError::AlertReceived(_)),
            "{stranger:?}"
        );

        let tenant = pki.client_from_client_ca("tenant-a");
        let mut client = TestClient::tls(
            endpoint.addr(),
            config(pki.ca_pem(), Some(&tenant), BOTH),
            "localhost",
        );
        get_hello(&mut client).await;
        eventually(WAIT, "both refusals recorded", || async {
            endpoint.connections()[..2]
                .iter()
                .all(|c| c.tls_error.is_some())
        })
        .await;
        assert_eq!(endpoint.connections_accepted(), 3);
        assert_eq!(endpoint.client_certificates(), [true]);
    }

    #[tokio::test]
    async fn fake_http_optional_client_certificates_are_reported() {
        let pki = TestPki::new();
        let tls = TlsServer::new(&pki.server()).accept_client_cert(pki.ca_pem());
        let endpoint = Endpoint::serve(hello(), Serve::tls(tls)).await;
        let mut anonymous = TestClient::tls(
            endpoint.addr(),
            config(pki.ca_pem(), None, BOTH),
            "localhost",
        );
        get_hello(&mut anonymous).await;
        let tenant = pki.client("tenant-a");
        let mut identified = TestClient::tls(
            endpoint.addr(),
            config(pki.ca_pem(), Some(&tenant), BOTH),
            "localhost",
        );
        get_hello(&mut identified).await;
        assert_eq!(endpoint.client_certificates(), [false, true]);
    }

    /// Clients of `endpoint` over each protocol it is served in: plain
    /// HTTP/1.1 and h2c, or TLS negotiating HTTP/1.1 and h2.
    fn clients(endpoint: &Endpoint, pki: &TestPki, tls: bool) -> Vec<(Version, TestClient)> {
        let addr = endpoint.addr();
        if tls {
            vec![
                (
                    Version::HTTP_11,
                    TestClient::tls(addr, config(pki.ca_pem(), None, HTTP1), "localhost"),
                ),
                (
                    Version::HTTP_2,
                    TestClient::tls(addr, config(pki.ca_pem(), None, BOTH), "localhost"),
                ),
            ]
        } else {
            vec![
                (Version::HTTP_11, TestClient::plain(addr)),
                (Version::HTTP_2, TestClient::h2c(addr)),
            ]
        }
    }

    fn serving(pki: &TestPki, tls: bool, connections: Connections) -> Serve {
        let how = if tls {
            Serve::tls(TlsServer::new(&pki.server()))
        } else {
            Serve::plain()
        };
        how.connections(connections)
    }

    #[tokio::test]
    async fn fake_http_keep_alive_serves_every_request_on_one_connection() {
        let pki = TestPki::new();
        for tls in [false, true] {
            let how = serving(&pki, tls, Connections::KeepAlive);
            let endpoint = Endpoint::serve(hello(), how).await;
            for (version, mut client) in clients(&endpoint, &pki, tls) {
                for _ in 0..3 {
                    assert_eq!(get_hello(&mut client).await.version, version);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                assert!(!client.is_closed(), "tls {tls}, {version:?}: still open");
                assert_eq!(client.opened, 1, "tls {tls}, {version:?}");
            }
            assert_eq!(endpoint.connections_accepted(), 2, "tls {tls}");
            assert!(endpoint.connections().iter().all(|c| c.requests == 3));
        }
    }

    #[tokio::test]
    async fn fake_http_connection_close_closes_after_every_response() {
        let pki = TestPki::new();
        for tls in [false, true] {
            let how = serving(&pki, tls, Connections::CloseEach);
            let endpoint = Endpoint::serve(hello(), how).await;
            for (version, mut client) in clients(&endpoint, &pki, tls) {
                for _ in 0..3 {
                    let reply = get_hello(&mut client).await;
                    assert_eq!(reply.version, version);
                    // HTTP/2 has no Connection header: it says GOAWAY.
                    let close = reply.headers.get(CONNECTION).map(|v| v.as_bytes());
                    let expected = (version == Version::HTTP_11).then_some(&b"close"[..]);
                    assert_eq!(close, expected, "tls {tls}, {version:?}");
                    eventually(WAIT, "the fake closes the connection", || async {
                        client.is_closed()
                    })
                    .await;
                }
                assert_eq!(client.opened, 3, "tls {tls}, {version:?}");
            }
            assert_eq!(endpoint.connections_accepted(), 6, "tls {tls}");
            let requests: Vec<_> = endpoint.connections().iter().map(|c| c.requests).collect();
            assert_eq!(requests, [1; 6]);
        }
    }

    #[tokio::test]
    async fn fake_http_idle_connections_are_dropped_without_a_word() {
        let pki = TestPki::new();
        let idle = Duration::from_millis(300);
        for tls in [false, true] {
            let how = serving(&pki, tls, Connections::DropWhenIdle(idle));
            let endpoint = Endpoint::serve(hello(), how).await;
            for (version, mut client) in clients(&endpoint, &pki, tls) {
                let what = format!("tls {tls}, {version:?}");
                for _ in 0..2 {
                    let reply = get_hello(&mut client).await;
                    assert!(!reply.headers.contains_key(CONNECTION), "{what}");
                }
                let answered = Instant::now();
                assert_eq!(client.opened, 1, "{what}: busy connections are kept");
                eventually(WAIT, "the fake drops the idle connection", || async {
                    client.is_closed()
                })
                .await;
                assert!(
                    answered.elapsed() >= idle - Duration::from_millis(50),
                    "{what}"
                );
                get_hello(&mut client).await;
                assert_eq!(client.opened, 2, "{what}");
            }
            eventually(WAIT, "the idle connections are closed", || async {
                let connections = endpoint.connections();
                connections.len() == 4 && connections.iter().filter(|c| c.closed).count() >= 3
            })
            .await;
        }
    }

    #[derive(Clone, Default)]
    struct Greeter {
        ledger: Ledger<Greetings>,
    }

    #[derive(Clone, Copy, Default, Serialize)]
    struct Greetings {
        hello: usize,
    }

    impl FakeService for Greeter {
        type Calls = Greetings;

        fn ledger(&self) -> &Ledger<Greetings> {
            &self.ledger
        }

        fn authorize(&self, _: &HeaderMap) -> Result<(), Box<Response>> {
            Ok(())
        }
    }

    async fn greet(State(fake): State<Greeter>, headers: HeaderMap) -> Response {
        match fake.admit(&headers, |calls| &mut calls.hello) {
            Ok(()) => "hello".into_response(),
            Err(refusal) => *refusal,
        }
    }

    #[tokio::test]
    async fn fake_http_a_fake_serves_over_tls_directly_or_in_front() {
        let pki = TestPki::new();
        let routes = || Router::new().route("/", get(greet));
        let tls = || Serve::tls(TlsServer::new(&pki.server()));
        let trusting = config(pki.ca_pem(), None, BOTH);

        let direct = Serving::serve_with("greeter", routes(), |_| Greeter::default(), tls()).await;
        assert!(direct.base_url().starts_with("https://localhost:"));
        let mut client = TestClient::tls(direct.addr(), trusting.clone(), "localhost");
        get_hello(&mut client).await;
        let calls = client.get("/__fake/calls").await.expect("the fake's calls");
        assert_eq!(calls.body, r#"{"hello":1}"#);
        assert_eq!(direct.connections_accepted(), 1);
        assert_eq!(direct.http_versions(), [Version::HTTP_2]);
        assert_eq!(direct.client_certificates(), [false]);

        let plain = Serving::serve("greeter", routes(), |_| Greeter::default()).await;
        assert_eq!(plain.base_url(), format!("http://{}", plain.addr()));
        let front = plain.serve_also(tls()).await;
        let mut client = TestClient::tls(front.addr(), trusting, "localhost");
        get_hello(&mut client).await;
        assert_eq!(plain.calls().hello, 1, "one fake behind both ports");
        assert_eq!(
            (plain.connections_accepted(), front.connections_accepted()),
            (0, 1)
        );
    }
}
