//! What a guest cannot do with outbound HTTP, whatever its manifest's
//! rules admit by name: reach an internal address through a wildcard
//! (loopback, private, link-local, IPv4-mapped forms), borrow the server's
//! proxy credentials (`TRACE`, `Max-Forwards`, `Proxy-*`), send credentials
//! in a URL, keep more connections open than the pool's bound, or grow the
//! metrics with every reload.
//!
//! The cases naming addresses off this machine (the metadata service at
//! 169.254.169.254, 10.0.0.1) run the server in a network namespace with
//! only loopback: were the refusal to fail, the request would find no
//! route, and the refusal is seen in the error and the denied counter.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use flyte_connect::proto::{connector::CreateTaskRequest, core::SimpleType};
use flyte_connect_e2e::{
    Server, Workspace,
    endpoint::{Endpoint, Serve},
    eventually,
    literals::{self, TypedInputs, list, list_of, map, map_of, simple, string},
    metric_value,
    proxy::{FakeProxy, ProxyOptions, basic_credentials},
};
use serde_json::Value;
use tonic::Code;

/// `/small` answers ten bytes.
async fn small_endpoint() -> Endpoint {
    let router = Router::new().route("/small", get(|| async { "0123456789" }));
    Endpoint::serve(router, Serve::plain()).await
}

/// The faulty component allowed `rules`, served with `flags` and `env`.
fn serve_with(rules: &[String], flags: &[&str], env: &[(&str, &str)]) -> (Workspace, Server) {
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write("faulty.toml", manifest(rules).as_bytes());
    let dir = plugins.path().display().to_string();
    let mut args = vec!["--plugin-dir", dir.as_str()];
    args.extend_from_slice(flags);
    let server = Server::start_with_env(&args, plugins.path(), env);
    (plugins, server)
}

fn manifest(rules: &[String]) -> String {
    let quoted: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    format!("allowed_hosts = [{}]\n", quoted.join(", "))
}

/// A `fetch` of `url` with `method` and `headers`.
fn fetch(url: &str, method: &str, headers: &[(&str, &str)]) -> CreateTaskRequest {
    literals::create_request(
        "fetch",
        &TypedInputs(vec![
            ("url", string(url), simple(SimpleType::String)),
            ("method", string(method), simple(SimpleType::String)),
            (
                "headers",
                map(headers.iter().map(|(k, v)| (*k, string(v))).collect()),
                map_of(simple(SimpleType::String)),
            ),
        ]),
    )
}

/// A `fan_out` to each of `urls` in turn.
fn fan_out(urls: &[String]) -> CreateTaskRequest {
    literals::create_request(
        "fan_out",
        &TypedInputs(vec![(
            "urls",
            list(urls.iter().map(|u| string(u)).collect()),
            list_of(simple(SimpleType::String)),
        )]),
    )
}

async fn fetched(server: &Server, request: CreateTaskRequest) -> Result<Value, tonic::Status> {
    let meta = server
        .tasks()
        .await
        .create_task(request)
        .await?
        .into_inner()
        .resource_meta;
    Ok(serde_json::from_slice(&meta).expect("the meta is JSON"))
}

/// `flyte_connector_outbound_denied_total` of the faulty connector for
/// `host` and `reason`.
fn denied(server: &Server, host: &str, reason: &str) -> Option<f64> {
    metric_value(
        &server.metrics_text(),
        "flyte_connector_outbound_denied_total",
        &[
            ("connector", "Faulty Connector"),
            ("host", host),
            ("reason", reason),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_never_reaches_loopback_and_a_rule_naming_the_address_does() {
    let service = small_endpoint().await;
    let port = service.addr().port();
    let wildcard = vec!["http://*:*".to_owned()];
    let (_plugins, server) = serve_with(&wildcard, &[], &[]);
    for (host, says) in [
        ("localhost", "localhost resolves to"),
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("[::ffff:127.0.0.1]", "is a loopback address"),
        ("[::1]", "::1 is a loopback address"),
    ] {
        let url = format!("http://{host}:{port}/small");
        let status = fetched(&server, fetch(&url, "GET", &[]))
            .await
            .expect_err(&url);
        assert_eq!(status.code(), Code::Internal, "{url}: {}", status.message());
        assert!(
            status.message().contains(says) && status.message().contains("refused"),
            "{url}: {}",
            status.message()
        );
    }
    assert_eq!(service.connections_accepted(), 0, "loopback was reached");
    assert_eq!(
        denied(&server, &format!("http://localhost:{port}"), "address"),
        Some(1.0)
    );
    let output = server.output.text();
    assert!(
        output
            .lines()
            .any(|l| l.contains("WARN") && l.contains("a loopback address")),
        "{output}"
    );

    // A rule naming the address, or the host exactly, reaches it.
    for rules in [
        vec!["http://*:*".to_owned(), format!("http://127.0.0.1:{port}")],
        vec!["http://*:*".to_owned(), "http://127.0.0.0/8:*".to_owned()],
        vec![format!("http://localhost:{port}")],
    ] {
        let (_plugins, server) = serve_with(&rules, &[], &[]);
        let url = format!("http://localhost:{port}/small");
        let seen = fetched(&server, fetch(&url, "GET", &[]))
            .await
            .unwrap_or_else(|status| panic!("{rules:?}: {status:?}"));
        assert_eq!(seen["body"], "0123456789", "{rules:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_service_and_private_addresses_are_refused_by_address() {
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write(
        "faulty.toml",
        manifest(&["https://*".to_owned(), "http://*".to_owned()]).as_bytes(),
    );
    let dir = plugins.path().display().to_string();
    // Only loopback here: a refusal that failed would find no route.
    let server = Server::start_isolated(&["--plugin-dir", &dir], plugins.path(), &[]);
    for (url, shown, says) in [
        (
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://169.254.169.254:80",
            "169.254.169.254 is a link-local address",
        ),
        (
            "https://10.0.0.1/",
            "https://10.0.0.1:443",
            "10.0.0.1 is a private address",
        ),
        (
            "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
            "http://[::ffff:a9fe:a9fe]:80",
            "is a link-local address",
        ),
    ] {
        let status = fetched(&server, fetch(url, "GET", &[]))
            .await
            .expect_err(url);
        assert_eq!(status.code(), Code::Internal, "{url}: {}", status.message());
        assert!(
            status.message().contains(says),
            "{url}: {}",
            status.message()
        );
        assert_eq!(denied(&server, shown, "address"), Some(1.0), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_borrow_the_proxys_credentials() {
    let service = small_endpoint().await;
    let port = service.addr().port();
    let password = "pr0xy-s3cret";
    let proxy = FakeProxy::start_with(
        ProxyOptions::new()
            .require_basic("flyte", password)
            .echo_trace(),
    )
    .await;
    let proxy_url = proxy.url_with_credentials("flyte", password);
    let (_plugins, server) = serve_with(
        &["http://127.0.0.1:*".to_owned()],
        &[],
        &[("HTTP_PROXY", &proxy_url), ("RUST_LOG", "debug")],
    );
    let url = format!("http://127.0.0.1:{port}/small");

    // TRACE, which the proxy would answer itself with the request it got,
    // the server's Proxy-Authorization in it: never sent.
    let status = fetched(&server, fetch(&url, "TRACE", &[]))
        .await
        .expect_err("TRACE");
    assert!(
        status.message().contains("TRACE") && !status.message().contains("Basic"),
        "{}",
        status.message()
    );
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    assert_eq!(
        denied(&server, &format!("http://127.0.0.1:{port}"), "method"),
        Some(1.0)
    );

    // A guest may not set Proxy-Authorization at all (wasi:http forbids
    // it); Max-Forwards and other Proxy-* headers are dropped: the request
    // reaches the target, with the server's credentials only.
    let status = fetched(
        &server,
        fetch(
            &url,
            "GET",
            &[("Proxy-Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")],
        ),
    )
    .await
    .expect_err("a guest's Proxy-Authorization");
    assert!(
        status.message().contains("not allowed"),
        "{}",
        status.message()
    );
    let seen = fetched(
        &server,
        fetch(
            &url,
            "GET",
            &[("Max-Forwards", "0"), ("Proxy-Trace-Me", "please")],
        ),
    )
    .await
    .expect("forwarded to the target");
    assert_eq!(seen["body"], "0123456789", "{seen}");
    let forwarded = proxy.requests();
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert_eq!(
        forwarded[0].proxy_authorization.as_deref(),
        Some(basic_credentials("flyte", password).as_str())
    );
    assert!(
        !forwarded[0]
            .headers
            .iter()
            .any(|(name, _)| name == "max-forwards" || name == "proxy-trace-me"),
        "{:?}",
        forwarded[0].headers
    );
    assert!(!server.output.text().contains(password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_a_url_are_refused_before_anything_is_sent() {
    let service = small_endpoint().await;
    let port = service.addr().port();
    let (_plugins, server) = serve_with(
        &["http://127.0.0.1:*".to_owned()],
        &[],
        &[("RUST_LOG", "debug")],
    );
    let url = format!("http://admin:hunter2@127.0.0.1:{port}/small");
    let status = fetched(&server, fetch(&url, "GET", &[]))
        .await
        .expect_err("userinfo");
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("carries credentials"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("hunter2"),
        "{}",
        status.message()
    );
    assert_eq!(service.connections_accepted(), 0);
    assert!(!server.output.text().contains("hunter2"));
    assert_eq!(
        denied(
            &server,
            &format!("http://127.0.0.1:{port}"),
            "credentials_in_url"
        ),
        Some(1.0)
    );
}

/// Listeners on `count` loopback addresses (127.0.1.1, 127.0.1.2, ...), one
/// port, each answering `/anything` with ten bytes and keeping connections
/// open; the count of connections they accepted.
async fn loopback_fleet(count: usize) -> (u16, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let first = std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 1, 1), 0)).expect("bind");
    let port = first.local_addr().expect("an address").port();
    let mut listeners = vec![first];
    for i in 1..count {
        let ip = Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
        listeners.push(std::net::TcpListener::bind((ip, port)).expect("bind a loopback address"));
    }
    for listener in listeners {
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, Infallible>(hyper::Response::new(String::from("0123456789")))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    (port, accepted)
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_calling_hundreds_of_hosts_leaves_the_servers_descriptors_bounded() {
    const HOSTS: usize = 500;
    let (port, accepted) = loopback_fleet(HOSTS).await;
    let (_plugins, server) = serve_with(&[format!("http://127.0.0.0/8:{port}")], &[], &[]);
    let urls: Vec<String> = (0..HOSTS)
        .map(|i| {
            format!(
                "http://127.0.{}.{}:{port}/anything",
                1 + i / 250,
                1 + i % 250
            )
        })
        .collect();
    let before = open_descriptors(server.pid());
    let seen = fetched(&server, fan_out(&urls)).await.expect("fan out");
    assert_eq!(seen["answered"], HOSTS, "{seen}");
    assert_eq!(accepted.load(Ordering::SeqCst), HOSTS);
    // Every host answered on a connection of its own, yet the server keeps
    // only the pools of its last few targets.
    let after = open_descriptors(server.pid());
    assert!(
        after < before + 40,
        "{before} descriptors before, {after} after calling {HOSTS} hosts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_never_make_room_for_more_host_labels() {
    let plugins = Workspace::new();
    plugins.add_variant("faulty", "faulty.wasm", "round 0");
    plugins.write(
        "faulty.toml",
        manifest(&["https://allowed.example".to_owned()]).as_bytes(),
    );
    let dir = plugins.path().display().to_string();
    let server = Server::start(
        &["--plugin-dir", &dir, "--reload-interval", "0.2"],
        plugins.path(),
    );
    for round in 0..3 {
        let urls: Vec<String> = (0..70)
            .map(|i| format!("https://h{i}.round{round}.example/"))
            .collect();
        let seen = fetched(&server, fan_out(&urls)).await.expect("fan out");
        assert_eq!(seen["answered"], 0, "{seen}");
        // A new build of the plugin: reloaded in place.
        plugins.add_variant("faulty", "faulty.wasm", &format!("round {}", round + 1));
        let reloads = |text: &str| {
            metric_value(
                text,
                "flyte_connector_reloads_total",
                &[("outcome", "replaced")],
            )
            .unwrap_or(0.0)
        };
        eventually(
            Duration::from_secs(30),
            "the plugin is reloaded",
            || async { reloads(&server.metrics_text()) >= f64::from(round + 1) },
        )
        .await;
    }
    let text = server.metrics_text();
    let series: BTreeMap<&str, ()> = text
        .lines()
        .filter(|l| {
            l.starts_with("flyte_connector_outbound_denied_total{")
                && l.contains("connector=\"Faulty Connector\"")
        })
        .map(|l| (l, ()))
        .collect();
    assert!(
        series.len() <= 65,
        "{} series of denied hosts after three reloads:\n{text}",
        series.len()
    );
    assert!(series.keys().any(|l| l.contains("host=\"_other\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_may_have_only_so_many_requests_open_at_once() {
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "0123456789"
        }),
    );
    let service = Endpoint::serve(router, Serve::plain()).await;
    let url = format!("{}/slow", service.base_url());
    let gather = |count: &str| {
        literals::create_request(
            "faulty_py",
            &TypedInputs(vec![
                ("fault", string("gather"), simple(SimpleType::String)),
                ("url", string(&url), simple(SimpleType::String)),
                ("count", string(count), simple(SimpleType::String)),
            ]),
        )
    };
    for (limit, answered) in [(Some(3), 3), (None, 8)] {
        let plugins = Workspace::with_components(&["faulty-py"]);
        let mut manifest = manifest(&[format!("http://{}", service.addr())]);
        if let Some(limit) = limit {
            manifest.push_str(&format!("[http]\nmax_concurrent_requests = {limit}\n"));
        }
        plugins.write("faulty-py.toml", manifest.as_bytes());
        let dir = plugins.path().display().to_string();
        let server = Server::start(&["--plugin-dir", &dir], plugins.path());
        let meta = fetched(&server, gather("8")).await.expect("gather");
        let tally: Value =
            serde_json::from_str(meta["tally"].as_str().unwrap_or_default()).expect("a tally");
        assert_eq!(tally["answered"], answered, "{limit:?}: {tally}");
        if let Some(errors) = tally["errors"].as_array() {
            assert!(
                errors.iter().all(|e| e
                    .as_str()
                    .is_some_and(|e| e.contains("http.max_concurrent_requests"))),
                "{tally}"
            );
        }
    }
}
