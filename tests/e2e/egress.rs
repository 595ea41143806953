//! Connectors in a real cluster's network, on loopback: TLS to services
//! behind a private CA (trusted from `SSL_CERT_FILE`, `--ca-file` or the
//! manifest), refused certificates with their reasons, mutual TLS, pooled
//! keep-alive connections (and servers that close them), HTTP proxies, and
//! credentials from the pod's environment and files.
//!
//! Every certificate is made in the test (`pki`); every service, proxy
//! included, listens on 127.0.0.1.

use std::{path::Path, time::Duration};

use axum::{Router, routing::get};
use flyte_connect::proto::core::SimpleType;
use flyte_connect_e2e::{
    Server, Workspace,
    endpoint::{Connections, Endpoint, Serve, TlsServer},
    eventually,
    fake_databricks::{self, FakeDatabricks},
    hosted::connection,
    literals::{self, TypedInputs, simple, string},
    metric_value,
    pki::{Issued, TestPki},
    proxy::{FakeProxy, ProxyOptions, basic_credentials},
};
use serde_json::{Value, json};
use tonic::Code;

const TOKEN: &str = "dapi-pod-token-0123456789";

/// `/small` answers ten bytes.
fn small_service() -> Router {
    Router::new().route("/small", get(|| async { "0123456789" }))
}

/// [`small_service`] served as `how` says.
async fn endpoint(how: Serve) -> Endpoint {
    Endpoint::serve(small_service(), how).await
}

/// [`small_service`] over TLS with `leaf`, its URLs naming `localhost`.
async fn tls_endpoint(leaf: &Issued) -> Endpoint {
    endpoint(Serve::tls(TlsServer::new(leaf))).await
}

fn fetch(url: &str) -> flyte_connect::proto::connector::CreateTaskRequest {
    literals::create_request(
        "fetch",
        &TypedInputs(vec![("url", string(url), simple(SimpleType::String))]),
    )
}

/// The faulty component (whose `fetch` GETs a URL), allowed https and http
/// to any loopback port, with `more` in its manifest; the server started
/// with `args` and `env`.
fn fetcher(more: &str, args: &[&str], env: &[(&str, &str)]) -> (Server, Workspace) {
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write(
        "faulty.toml",
        format!("allowed_hosts = [\"https://localhost:*\", \"http://127.0.0.1:*\"]\n{more}")
            .as_bytes(),
    );
    let dir = plugins.path().display().to_string();
    let mut all = vec!["--plugin-dir", dir.as_str()];
    all.extend_from_slice(args);
    let mut all_env = vec![("RUST_LOG", "debug")];
    all_env.extend_from_slice(env);
    let server = Server::start_with_env(&all, plugins.path(), &all_env);
    (server, plugins)
}

async fn fetched(server: &Server, url: &str) -> Result<Value, tonic::Status> {
    let meta = server
        .tasks()
        .await
        .create_task(fetch(url))
        .await?
        .into_inner()
        .resource_meta;
    Ok(serde_json::from_slice(&meta).expect("the meta is JSON"))
}

/// Certificates made for one test, with its CA written to `ca.pem` in a
/// folder that lives as long as the returned handle: what `SSL_CERT_FILE`,
/// `--ca-file` or a manifest names.
fn trusted_ca() -> (TestPki, tempfile::TempDir, String) {
    let pki = TestPki::new();
    let files = tempfile::tempdir().expect("temp dir");
    let ca = path(&pki.ca().write(files.path(), "ca.pem"));
    (pki, files, ca)
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_from_ssl_cert_file_ca_file_or_the_manifest() {
    let (pki, files, ca) = trusted_ca();
    let service = tls_endpoint(&pki.server()).await;
    let url = format!("{}/small", service.base_url());
    let ok = json!({"status": 200, "bytes": 10, "body": "0123456789"});

    let (server, _plugins) = fetcher("", &[], &[("SSL_CERT_FILE", &ca)]);
    assert_eq!(fetched(&server, &url).await.expect("SSL_CERT_FILE"), ok);

    let (server, _plugins) = fetcher("", &["--ca-file", &ca], &[]);
    assert_eq!(fetched(&server, &url).await.expect("--ca-file"), ok);

    let (server, _plugins) = fetcher("", &[], &[("FLYTE_CONNECT_CA_FILE", &ca)]);
    assert_eq!(
        fetched(&server, &url).await.expect("FLYTE_CONNECT_CA_FILE"),
        ok
    );

    // A manifest reads files only under the operator's credential folders.
    let manifest = format!("[[http.tls]]\nca_file = {ca:?}\n");
    let (server, _plugins) = fetcher(&manifest, &["--credentials-dir", &path(files.path())], &[]);
    assert_eq!(fetched(&server, &url).await.expect("the manifest"), ok);

    // Without it, the call fails at once naming the host and the reason,
    // and the failure is counted.
    let (server, _plugins) = fetcher("", &[], &[]);
    let status = fetched(&server, &url).await.expect_err("untrusted");
    let authority = format!("localhost:{}", service.addr().port());
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    assert!(
        status.message().contains(&authority) && status.message().contains("unknown issuer"),
        "{}",
        status.message()
    );
    let metrics = server.metrics_text();
    assert_eq!(
        metric_value(
            &metrics,
            "flyte_connector_outbound_tls_failures_total",
            &[
                ("connector", "Faulty Connector"),
                ("host", &format!("https://{authority}")),
                ("reason", "unknown_issuer"),
            ],
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_certificates_name_the_host_and_the_reason() {
    let (pki, _files, ca) = trusted_ca();
    let (server, _plugins) = fetcher("", &["--ca-file", &ca], &[]);
    for (leaf, reason) in [
        (pki.expired_server(), "has expired"),
        (pki.wrong_name_server(), "name mismatch"),
        (pki.untrusted_server(), "unknown issuer"),
    ] {
        let service = tls_endpoint(&leaf).await;
        let started = std::time::Instant::now();
        let status = fetched(&server, &format!("{}/small", service.base_url()))
            .await
            .expect_err(reason);
        assert!(started.elapsed() < Duration::from_secs(5), "no hang");
        let message = status.message();
        assert!(
            message.contains(&format!("localhost:{}", service.addr().port()))
                && message.contains(reason),
            "{reason}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_manifests_client_certificate() {
    let (pki, files, ca) = trusted_ca();
    let client = pki
        .client_from_client_ca("faulty")
        .write(files.path(), "client");
    let service = endpoint(Serve::tls(
        TlsServer::new(&pki.server()).require_client_cert(pki.client_ca().cert_pem()),
    ))
    .await;
    let url = format!("{}/small", service.base_url());

    let manifest = format!(
        "[[http.tls]]\nhosts = [\"https://localhost:*\"]\nca_file = {ca:?}\nclient_cert_file = {:?}\nclient_key_file = {:?}\n",
        path(&client.cert),
        path(&client.key)
    );
    let (server, _plugins) = fetcher(&manifest, &["--credentials-dir", &path(files.path())], &[]);
    assert_eq!(
        fetched(&server, &url)
            .await
            .expect("with the client certificate"),
        json!({"status": 200, "bytes": 10, "body": "0123456789"})
    );
    assert_eq!(service.client_certificates(), [true]);

    let (server, _plugins) = fetcher("", &["--ca-file", &ca], &[]);
    let status = fetched(&server, &url)
        .await
        .expect_err("no client certificate");
    let authority = format!("localhost:{}", service.addr().port());
    assert!(
        status.message().contains(&authority) && status.message().contains("client certificate"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_calls_share_a_few_pooled_connections_over_http2() {
    let (pki, _files, ca) = trusted_ca();
    let tls = tls_endpoint(&pki.server()).await;
    let plain = endpoint(Serve::plain()).await;
    let (server, _plugins) = fetcher("", &["--ca-file", &ca], &[]);
    for _ in 0..20 {
        fetched(&server, &format!("{}/small", tls.base_url()))
            .await
            .expect("over TLS");
        fetched(&server, &format!("{}/small", plain.base_url()))
            .await
            .expect("plain");
    }
    // Twenty calls, each a fresh instance, over at most a couple of
    // connections per service; HTTP/2 where ALPN offered it.
    assert!(tls.connections_accepted() <= 2, "{:?}", tls.connections());
    assert!(
        plain.connections_accepted() <= 2,
        "{:?}",
        plain.connections()
    );
    assert!(
        tls.http_versions()
            .iter()
            .all(|v| *v == axum::http::Version::HTTP_2),
        "{:?}",
        tls.http_versions()
    );
    let opened = metric_value(
        &server.metrics_text(),
        "flyte_connector_outbound_connections_total",
        &[
            ("connector", "Faulty Connector"),
            ("host", &format!("https://localhost:{}", tls.addr().port())),
        ],
    );
    assert_eq!(opened, Some(tls.connections_accepted() as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_close_connections_lose_no_call() {
    let (pki, _files, ca) = trusted_ca();
    let closing = endpoint(Serve::plain().connections(Connections::CloseEach)).await;
    let reaping = endpoint(
        Serve::tls(TlsServer::new(&pki.server()))
            .http1_only()
            .connections(Connections::DropWhenIdle(Duration::from_millis(300))),
    )
    .await;
    let reaping_h2 = endpoint(
        Serve::tls(TlsServer::new(&pki.server()))
            .connections(Connections::DropWhenIdle(Duration::from_millis(300))),
    )
    .await;
    let (server, _plugins) = fetcher("", &["--ca-file", &ca], &[]);
    for round in 0..5 {
        for service in [&closing, &reaping, &reaping_h2] {
            fetched(&server, &format!("{}/small", service.base_url()))
                .await
                .unwrap_or_else(|status| {
                    panic!("round {round}, {}: {status:?}", service.base_url())
                });
        }
        // Longer than the reaper's idle time: the pooled connections die.
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert_eq!(closing.connections_accepted(), 5);
    assert_eq!(reaping.connections_accepted(), 5);
    assert_eq!(reaping_h2.connections_accepted(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_goes_through_the_proxy_with_its_credentials_and_no_proxy_bypasses_it() {
    let (pki, _files, ca) = trusted_ca();
    let service = tls_endpoint(&pki.server()).await;
    let url = format!("{}/small", service.base_url());
    let target = format!("localhost:{}", service.addr().port());
    let password = "pr0xy-s3cret";
    let proxy = FakeProxy::start_with(ProxyOptions::new().require_basic("flyte", password)).await;
    let with_credentials = proxy.url_with_credentials("flyte", password);

    let (server, _plugins) = fetcher(
        "",
        &["--ca-file", &ca],
        &[("HTTPS_PROXY", &with_credentials)],
    );
    assert_eq!(
        fetched(&server, &url).await.expect("through the proxy"),
        json!({"status": 200, "bytes": 10, "body": "0123456789"})
    );
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("CONNECT", target.as_str())
    );
    assert_eq!(
        seen[0].proxy_authorization.as_deref(),
        Some(basic_credentials("flyte", password).as_str())
    );
    // A denied host never reaches the proxy.
    let status = fetched(&server, "https://denied.example.com/x")
        .await
        .expect_err("denied");
    assert!(status.message().contains("denied"), "{}", status.message());
    assert_eq!(proxy.requests().len(), 1);
    let output = server.output.text();
    assert!(output.contains("DEBUG"), "logged at debug");
    assert!(
        !output.contains(password),
        "the proxy password reached the log"
    );
    assert!(
        !output.contains(&basic_credentials("flyte", password)["Basic ".len()..]),
        "the proxy credentials reached the log"
    );

    // No credentials: the proxy's 407 is the call's error.
    let (server, _plugins) = fetcher("", &["--ca-file", &ca], &[("https_proxy", &proxy.url())]);
    let status = fetched(&server, &url).await.expect_err("407");
    assert!(
        status.message().contains("407") && status.message().contains(&proxy.url()),
        "{}",
        status.message()
    );

    // NO_PROXY names the target: straight there.
    let (server, _plugins) = fetcher(
        "",
        &["--ca-file", &ca],
        &[
            ("HTTPS_PROXY", &with_credentials),
            ("NO_PROXY", "example.org,localhost"),
        ],
    );
    let before = proxy.requests().len();
    fetched(&server, &url).await.expect("direct");
    assert_eq!(proxy.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_goes_to_the_proxy_in_absolute_form_and_a_refusal_is_named() {
    let plain = endpoint(Serve::plain()).await;
    let (pki, _files, ca) = trusted_ca();
    let refused = tls_endpoint(&pki.server()).await;
    let refused_target = format!("localhost:{}", refused.addr().port());
    let proxy = FakeProxy::start_with(ProxyOptions::new().refuse(&refused_target)).await;
    let (server, _plugins) = fetcher(
        "",
        &["--ca-file", &ca],
        &[("HTTP_PROXY", &proxy.url()), ("HTTPS_PROXY", &proxy.url())],
    );
    fetched(&server, &format!("{}/small", plain.base_url()))
        .await
        .expect("forwarded");
    let seen = proxy.requests();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("GET", plain.addr().to_string().as_str())
    );
    let status = fetched(&server, &format!("{}/small", refused.base_url()))
        .await
        .expect_err("403");
    assert!(
        status.message().contains("403") && status.message().contains(&refused_target),
        "{}",
        status.message()
    );
}

/// A Databricks create for the workspace at `instance` with the connection
/// `secrets` (none: the pod's fill it in).
fn databricks_create(
    instance: &str,
    secrets: &[(&str, &str)],
) -> flyte_connect::proto::connector::CreateTaskRequest {
    flyte_connect::proto::connector::CreateTaskRequest {
        template: Some(fake_databricks::task_template(
            instance,
            fake_databricks::job_conf("egress"),
        )),
        connection: Some(connection(secrets)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_pods_environment_and_files_and_a_rotated_file_reloads() {
    let fake = FakeDatabricks::start(TOKEN).await;
    let allowed = format!("allowed_hosts = [\"http://{}\"]\n", fake.addr());

    // From an environment variable of the server, for both builds.
    for component in ["databricks", "databricks-py"] {
        let plugins = Workspace::with_components(&[component]);
        plugins.write(
            &format!("{component}.toml"),
            format!(
                "{allowed}[credentials]\ndatabricks_token = {{ env = \"POD_DATABRICKS_TOKEN\" }}\n"
            )
            .as_bytes(),
        );
        let dir = path(plugins.path());
        let server = Server::start_with_env(
            &["--plugin-dir", &dir, "--credentials-env-prefix", "POD_"],
            plugins.path(),
            &[("RUST_LOG", "debug"), ("POD_DATABRICKS_TOKEN", TOKEN)],
        );
        server
            .tasks()
            .await
            .create_task(databricks_create(&fake.base_url(), &[]))
            .await
            .unwrap_or_else(|status| panic!("{component}: {status:?}"));
        assert!(
            !server.output.text().contains(TOKEN),
            "{component}: the token reached the log"
        );
    }

    // From a file: a rotated file takes effect without a restart.
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("databricks_token");
    std::fs::write(&token_file, "an-old-token\n").expect("write the secret");
    let plugins = Workspace::with_components(&["databricks"]);
    plugins.write(
        "databricks.toml",
        format!(
            "{allowed}[credentials]\ndatabricks_token = {{ file = {:?} }}\n",
            path(&token_file)
        )
        .as_bytes(),
    );
    let dir = path(plugins.path());
    let secrets_dir = path(secrets.path());
    let server = Server::start_with_env(
        &[
            "--plugin-dir",
            &dir,
            "--reload-interval",
            "0.2",
            "--credentials-dir",
            &secrets_dir,
        ],
        plugins.path(),
        &[("RUST_LOG", "debug")],
    );
    let status = server
        .tasks()
        .await
        .create_task(databricks_create(&fake.base_url(), &[]))
        .await
        .expect_err("the old token is refused");
    assert!(
        !status.message().contains("an-old-token"),
        "{}",
        status.message()
    );
    // A Secret volume swaps a link to new files; a rename does the same.
    let fresh = secrets.path().join("databricks_token.new");
    std::fs::write(&fresh, format!("{TOKEN}\n")).expect("write the new secret");
    std::fs::rename(&fresh, &token_file).expect("rotate the secret");
    eventually(
        Duration::from_secs(10),
        "the rotated token is used",
        || async {
            server
                .tasks()
                .await
                .create_task(databricks_create(&fake.base_url(), &[]))
                .await
                .is_ok()
        },
    )
    .await;
    // A token in the request wins over the pod's.
    let request = databricks_create(&fake.base_url(), &[("databricks_token", "the-tasks-own")]);
    let status = server
        .tasks()
        .await
        .create_task(request)
        .await
        .expect_err("the task's token");
    assert!(!status.message().contains(TOKEN), "{}", status.message());
    let output = server.output.text();
    assert!(
        !output.contains(TOKEN) && !output.contains("an-old-token"),
        "a token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sdks_databricks_connectors_work_over_tls_with_a_private_ca() {
    let (pki, _files, ca) = trusted_ca();
    let fake = FakeDatabricks::start(TOKEN).await;
    let tls = fake
        .serve_also(Serve::tls(TlsServer::new(&pki.server())))
        .await;
    for component in ["databricks", "databricks-py"] {
        let plugins = Workspace::with_components(&[component]);
        plugins.write(
            &format!("{component}.toml"),
            format!(
                "allowed_hosts = [\"https://localhost:{}\"]\n",
                tls.addr().port()
            )
            .as_bytes(),
        );
        let dir = path(plugins.path());
        let server = Server::start(&["--plugin-dir", &dir, "--ca-file", &ca], plugins.path());
        let request = databricks_create(&tls.base_url(), &[("databricks_token", TOKEN)]);
        server
            .tasks()
            .await
            .create_task(request)
            .await
            .unwrap_or_else(|status| panic!("{component} over TLS: {status:?}"));
    }
    assert_eq!(fake.submitted().len(), 2);
    assert!(tls.connections_accepted() >= 2);
}
