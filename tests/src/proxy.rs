//! A fake HTTP proxy on a free loopback port: [`FakeProxy`] tunnels
//! `CONNECT host:port` (copying bytes both ways, so TLS passes through it
//! untouched) and forwards plain-HTTP requests in absolute form
//! (`GET http://127.0.0.1:PORT/path`), optionally demanding Basic
//! credentials (407) and refusing chosen targets (403). It records each
//! request it received ([`ProxiedRequest`]) with the `Proxy-Authorization`
//! that came with it and its other headers. Made to, it answers `TRACE`
//! itself, and any request with `Max-Forwards: 0`, by echoing the request as
//! it received it, credentials included, as RFC 9110 has a proxy do.
//!
//! It only ever connects to this machine: a target that is not `localhost`
//! or a loopback address is refused with 403 before any connection is made,
//! so a test going through it can never reach the network.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    http::{
        HeaderValue, Method, Request, Response, StatusCode, Uri,
        header::{HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION},
    },
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::fake_http::lock;

/// What may stand unescaped in a URL's user or password: RFC 3986's
/// unreserved characters.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `Proxy-Authorization` value a client sends for `user` and
/// `password`: `Basic base64(user:password)`.
pub fn basic_credentials(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// What a [`FakeProxy`] demands and refuses.
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    credentials: Option<(String, String)>,
    refused: Vec<String>,
    echo_trace: bool,
}

impl ProxyOptions {
    /// No credentials demanded; every loopback target served.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers 407 (with `Proxy-Authenticate: Basic`) to a request without
    /// Basic credentials for `user` and `password`.
    pub fn require_basic(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Answers 403 to requests for `target`: a `host:port`, or a host for
    /// all its ports (compared without regard to case).
    pub fn refuse(mut self, target: &str) -> Self {
        self.refused.push(target.to_owned());
        self
    }

    /// Answers `TRACE`, and any request with `Max-Forwards: 0`, itself:
    /// 200 with the request it received as its body (`message/http`).
    pub fn echo_trace(mut self) -> Self {
        self.echo_trace = true;
        self
    }
}

/// One request a [`FakeProxy`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxiedRequest {
    /// `CONNECT`, `GET`, …
    pub method: String,
    /// The target as `host:port` (port 80 when an `http://` URL named
    /// none); for a request naming no target, its URI.
    pub target: String,
    /// The `Proxy-Authorization` value received, if any.
    pub proxy_authorization: Option<String>,
    /// Every header received, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// What the proxy answered: 200 for a tunnel it opened, the target's
    /// status for a forwarded request, 407, 403, 400 or 502 otherwise
    /// (0 while it has not answered yet).
    pub status: u16,
}

/// A fake HTTP proxy on a free port of 127.0.0.1; it stops when dropped,
/// tunnels it opened included.
pub struct FakeProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: watch::Sender<()>,
}

/// What the proxy's connections share.
struct Shared {
    options: ProxyOptions,
    requests: Mutex<Vec<ProxiedRequest>>,
}

impl FakeProxy {
    /// A proxy demanding no credentials and refusing no loopback target.
    pub async fn start() -> Self {
        Self::start_with(ProxyOptions::new()).await
    }

    /// A proxy as `options` says.
    pub async fn start_with(options: ProxyOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind the fake proxy port: {e}"));
        let addr = listener.local_addr().expect("the fake proxy's address");
        let shared = Arc::new(Shared {
            options,
            requests: Mutex::default(),
        });
        let (stop, stopped) = watch::channel(());
        tokio::spawn(accept(listener, shared.clone(), stopped));
        Self {
            addr,
            shared,
            _stop: stop,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: what `HTTPS_PROXY` or a manifest names.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:PORT`, user and password
    /// percent-encoded.
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!(
            "http://{}:{}@{}",
            utf8_percent_encode(user, USERINFO),
            utf8_percent_encode(password, USERINFO),
            self.addr
        )
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        lock(&self.shared.requests).clone()
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, stopped: watch::Receiver<()>) {
    let mut stop = stopped.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, shared.clone(), stopped.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, stopped: watch::Receiver<()>) {
    let service = {
        let stopped = stopped.clone();
        service_fn(move |request: Request<Incoming>| {
            let (shared, stopped) = (shared.clone(), stopped.clone());
            async move { Ok::<_, Infallible>(answer(request, &shared, stopped).await) }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Idle client connections stay open, as a proxy's usually do.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut stop = stopped;
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Where a request is to go.
struct Target {
    /// As written, without brackets around an IPv6 address.
    host: String,
    port: u16,
}

impl Target {
    /// The target of a `CONNECT host:port` or of an `http://` URL.
    fn of(request: &Request<Incoming>) -> Option<Self> {
        let uri = request.uri();
        let authority = uri.authority()?;
        let port = if request.method() == Method::CONNECT {
            authority.port_u16()?
        } else {
            if uri.scheme_str() != Some("http") {
                return None;
            }
            authority.port_u16().unwrap_or(80)
        };
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port`, with brackets around an IPv6 host.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The address to connect to: only `localhost` (as 127.0.0.1, without
    /// asking a resolver) and loopback addresses have one.
    fn loopback(&self) -> Option<SocketAddr> {
        let ip = if self.host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.host
                .parse::<IpAddr>()
                .ok()
                .filter(IpAddr::is_loopback)?
        };
        Some(SocketAddr::new(ip, self.port))
    }
}

impl Shared {
    fn record(&self, request: ProxiedRequest) -> usize {
        let mut requests = lock(&self.requests);
        requests.push(request);
        requests.len() - 1
    }

    fn answered(&self, index: usize, status: StatusCode) {
        if let Some(request) = lock(&self.requests).get_mut(index) {
            request.status = status.as_u16();
        }
    }

    fn authorized(&self, proxy_authorization: Option<&str>) -> bool {
        let Some((user, password)) = &self.options.credentials else {
            return true;
        };
        let Some((scheme, encoded)) = proxy_authorization.and_then(|v| v.split_once(' ')) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("basic")
            && STANDARD
                .decode(encoded.trim())
                .is_ok_and(|decoded| decoded == format!("{user}:{password}").as_bytes())
    }

    fn refuses(&self, target: &Target) -> bool {
        let authority = target.authority();
        self.options.refused.iter().any(|refused| {
            refused.eq_ignore_ascii_case(&authority) || refused.eq_ignore_ascii_case(&target.host)
        })
    }
}

async fn answer(
    request: Request<Incoming>,
    shared: &Shared,
    stopped: watch::Receiver<()>,
) -> Response<Body> {
    let target = Target::of(&request);
    let proxy_authorization = request
        .headers()
        .get(PROXY_AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let index = shared.record(ProxiedRequest {
        method: request.method().to_string(),
        target: target
            .as_ref()
            .map(Target::authority)
            .unwrap_or_else(|| request.uri().to_string()),
        proxy_authorization: proxy_authorization.clone(),
        headers: headers.clone(),
        status: 0,
    });
    let answers_itself = request.method() == Method::TRACE
        || headers
            .iter()
            .any(|(name, value)| name == "max-forwards" && value.trim() == "0");
    let response = if shared.options.echo_trace && answers_itself {
        let mut echo = format!("{} {} HTTP/1.1\r\n", request.method(), request.uri());
        for (name, value) in &headers {
            echo.push_str(&format!("{name}: {value}\r\n"));
        }
        let mut response = Response::new(Body::from(echo));
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("message/http"),
        );
        response
    } else if !shared.authorized(proxy_authorization.as_deref()) {
        let mut response = text(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "proxy credentials required",
        );
        response.headers_mut().insert(
            PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"fake-proxy\""),
        );
        response
    } else {
        match target {
            None => text(
                StatusCode::BAD_REQUEST,
                "a proxy serves CONNECT host:port and http:// URLs only",
            ),
            Some(target) => match target.loopback().filter(|_| !shared.refuses(&target)) {
                None => text(StatusCode::FORBIDDEN, "target refused by the fake proxy"),
                Some(addr) => match TcpStream::connect(addr).await {
                    Err(e) => text(StatusCode::BAD_GATEWAY, &format!("connect {addr}: {e}")),
                    Ok(upstream) if request.method() == Method::CONNECT => {
                        tunnel(request, upstream, stopped)
                    }
                    Ok(upstream) => forward(request, upstream, &target).await,
                },
            },
        }
    };
    shared.answered(index, response.status());
    response
}

/// Answers 200 to a CONNECT, then copies bytes both ways between the client
/// and `upstream` until either side closes or the proxy stops.
fn tunnel(
    mut request: Request<Incoming>,
    mut upstream: TcpStream,
    mut stopped: watch::Receiver<()>,
) -> Response<Body> {
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut client = TokioIo::new(upgraded);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = stopped.changed() => {}
        }
    });
    Response::new(Body::empty())
}

/// Sends an absolute-form request to `upstream` in origin form, without
/// the proxy's own headers, and answers with the target's response.
async fn forward(
    mut request: Request<Incoming>,
    upstream: TcpStream,
    target: &Target,
) -> Response<Body> {
    let origin_form = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<Uri>();
    let Ok(origin_form) = origin_form else {
        return text(StatusCode::BAD_REQUEST, "an unusable request target");
    };
    *request.uri_mut() = origin_form;
    let headers = request.headers_mut();
    headers.remove(PROXY_AUTHORIZATION);
    headers.remove("proxy-connection");
    if !headers.contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(&target.authority())
    {
        headers.insert(HOST, host);
    }
    let sent = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
        tokio::spawn(connection);
        sender.send_request(request).await
    };
    match sent.await {
        Ok(response) => response.map(Body::new),
        Err(e) => text(StatusCode::BAD_GATEWAY, &format!("forward: {e}")),
    }
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(message.to_owned()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use axum::{
        Router,
        http::{
            HeaderMap, Method, Request, StatusCode,
            header::{HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION},
        },
        routing::get,
    };
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpStream;

    use super::{FakeProxy, ProxiedRequest, ProxyOptions, basic_credentials};
    use crate::{
        endpoint::{
            Endpoint, Serve, TlsServer,
            tls_client::{Reply, Sender, config, tls},
        },
        pki::TestPki,
    };

    /// Answers with the `Proxy-Authorization` it received (`-` for none).
    fn echo() -> Router {
        Router::new().route(
            "/echo",
            get(|headers: HeaderMap| async move {
                headers
                    .get(PROXY_AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            }),
        )
    }

    async fn proxy_connection(proxy: &FakeProxy) -> Sender {
        let tcp = TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        Sender::handshake(tcp, false)
            .await
            .expect("an HTTP/1.1 connection to the proxy")
    }

    /// `CONNECT target` through `proxy`, with `authorization` if given.
    async fn connect(
        proxy: &FakeProxy,
        target: &str,
        authorization: Option<&str>,
    ) -> hyper::Response<hyper::body::Incoming> {
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .uri(target)
            .header(HOST, target);
        if let Some(authorization) = authorization {
            request = request.header(PROXY_AUTHORIZATION, authorization);
        }
        proxy_connection(proxy)
            .await
            .send(request.body(String::new()).expect("a CONNECT request"))
            .await
            .expect("the proxy's answer")
    }

    /// `GET url` in absolute form through `proxy`.
    async fn forward(proxy: &FakeProxy, url: &str, authorization: Option<&str>) -> Reply {
        let mut request = Request::get(url);
        if let Some(authorization) = authorization {
            request = request.header(PROXY_AUTHORIZATION, authorization);
        }
        let response = proxy_connection(proxy)
            .await
            .send(request.body(String::new()).expect("a request"))
            .await
            .expect("the proxy's answer");
        Reply::read(response).await.expect("a whole answer")
    }

    fn request(
        method: &str,
        target: &str,
        authorization: Option<&str>,
        status: u16,
    ) -> ProxiedRequest {
        ProxiedRequest {
            method: method.to_owned(),
            target: target.to_owned(),
            proxy_authorization: authorization.map(str::to_owned),
            headers: Vec::new(),
            status,
        }
    }

    /// What `proxy` received, headers left out.
    fn received(proxy: &FakeProxy) -> Vec<ProxiedRequest> {
        proxy
            .requests()
            .into_iter()
            .map(|request| ProxiedRequest {
                headers: Vec::new(),
                ..request
            })
            .collect()
    }

    #[tokio::test]
    async fn proxy_tunnels_tls_to_a_loopback_fake() {
        let pki = TestPki::new();
        let fake = Endpoint::serve(echo(), Serve::tls(TlsServer::new(&pki.server()))).await;
        let proxy = FakeProxy::start().await;
        let target = format!("localhost:{}", fake.addr().port());

        let response = connect(&proxy, &target, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let tunnel = hyper::upgrade::on(response).await.expect("a tunnel");
        let session = tls(
            TokioIo::new(tunnel),
            &config(pki.ca_pem(), None, &["http/1.1"]),
            "localhost",
        )
        .await
        .expect("TLS through the tunnel");
        let mut sender = Sender::handshake(session, false)
            .await
            .expect("HTTP/1.1 through the tunnel");
        for _ in 0..2 {
            let request = Request::get("/echo")
                .header(HOST, &target)
                .body(String::new())
                .expect("a request");
            let reply = Reply::read(sender.send(request).await.expect("an answer"))
                .await
                .expect("a whole answer");
            assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "-"));
        }

        assert_eq!(received(&proxy), [request("CONNECT", &target, None, 200)]);
        assert_eq!(fake.connections_accepted(), 1);
        assert_eq!(fake.connections()[0].requests, 2);
    }

    #[tokio::test]
    async fn proxy_forwards_absolute_form_requests_without_its_credentials() {
        let fake = Endpoint::serve(echo(), Serve::plain()).await;
        let proxy = FakeProxy::start_with(ProxyOptions::new().require_basic("u", "p")).await;
        let url = format!("{}/echo", fake.base_url());
        let credentials = basic_credentials("u", "p");

        let reply = forward(&proxy, &url, Some(&credentials)).await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "-"));
        let target = fake.addr().to_string();
        assert_eq!(
            received(&proxy),
            [request("GET", &target, Some(&credentials), 200)]
        );
        assert_eq!(fake.connections()[0].requests, 1);
    }

    #[tokio::test]
    async fn proxy_demands_its_credentials_with_407() {
        let fake = Endpoint::serve(echo(), Serve::plain()).await;
        let proxy =
            FakeProxy::start_with(ProxyOptions::new().require_basic("user@corp", "p:ss w/rd"))
                .await;
        let target = fake.addr().to_string();
        let good = basic_credentials("user@corp", "p:ss w/rd");
        assert_eq!(good, "Basic dXNlckBjb3JwOnA6c3Mgdy9yZA==");
        let wrong = basic_credentials("user@corp", "guess");

        let missing = connect(&proxy, &target, None).await;
        assert_eq!(missing.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        let challenge = missing.headers().get(PROXY_AUTHENTICATE);
        assert_eq!(
            challenge.and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"fake-proxy\"")
        );
        let refused = connect(&proxy, &target, Some(&wrong)).await;
        assert_eq!(refused.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        let url = format!("{}/echo", fake.base_url());
        let forwarded = forward(&proxy, &url, None).await;
        assert_eq!(forwarded.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        assert_eq!(
            connect(&proxy, &target, Some(&good)).await.status(),
            StatusCode::OK
        );

        assert_eq!(
            received(&proxy),
            [
                request("CONNECT", &target, None, 407),
                request("CONNECT", &target, Some(&wrong), 407),
                request("GET", &target, None, 407),
                request("CONNECT", &target, Some(&good), 200),
            ]
        );
        assert_eq!(
            proxy.url_with_credentials("user@corp", "p:ss w/rd"),
            format!("http://user%40corp:p%3Ass%20w%2Frd@{}", proxy.addr())
        );
        assert_eq!(proxy.url(), format!("http://{}", proxy.addr()));
    }

    #[tokio::test]
    async fn proxy_refuses_chosen_and_off_machine_targets_with_403() {
        let fake = Endpoint::serve(echo(), Serve::plain()).await;
        let other = Endpoint::serve(echo(), Serve::plain()).await;
        let refused = fake.addr().to_string();
        let proxy = FakeProxy::start_with(ProxyOptions::new().refuse(&refused)).await;
        let allowed = other.addr().to_string();

        assert_eq!(
            connect(&proxy, &refused, None).await.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            connect(&proxy, &allowed, None).await.status(),
            StatusCode::OK
        );
        // Never tried: the proxy connects to loopback targets only.
        for off_machine in ["example.invalid:443", "192.0.2.1:443"] {
            let answer = connect(&proxy, off_machine, None).await;
            assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{off_machine}");
        }
        let forwarded = forward(&proxy, "http://example.invalid/echo", None).await;
        assert_eq!(forwarded.status, StatusCode::FORBIDDEN);

        let statuses: Vec<_> = proxy.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [403, 200, 403, 403, 403]);
        assert_eq!(fake.connections_accepted(), 0);
        assert_eq!(other.connections_accepted(), 1);

        let by_host = FakeProxy::start_with(ProxyOptions::new().refuse("LOCALHOST")).await;
        let target = format!("localhost:{}", other.addr().port());
        assert_eq!(
            connect(&by_host, &target, None).await.status(),
            StatusCode::FORBIDDEN
        );
    }
}
