//! Outbound HTTP limits the host sets, and a manifest overrides: the
//! response-size cap and the first-byte timeout, through a component that
//! fetches a URL from a fake service on loopback.

use std::time::Duration;

use axum::{Router, routing::get};
use flyte_connect::proto::core::SimpleType;
use flyte_connect_e2e::{
    Server, Workspace,
    endpoint::{Endpoint, Serve},
    literals::{self, TypedInputs, simple, string},
};
use tonic::Code;

/// `/big`: 3 MiB; `/small`: 10 bytes; `/slow`: answers after 5 seconds.
async fn start_service() -> Endpoint {
    let app = Router::new()
        .route("/big", get(|| async { vec![b'x'; 3 << 20] }))
        .route("/small", get(|| async { "0123456789" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    Endpoint::serve(app, Serve::plain()).await
}

fn fetch(url: &str) -> flyte_connect::proto::connector::CreateTaskRequest {
    literals::create_request(
        "fetch",
        &TypedInputs(vec![("url", string(url), simple(SimpleType::String))]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_sets_the_response_cap_and_the_first_byte_timeout() {
    let service = start_service().await;
    let addr = service.addr();
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write(
        "faulty.toml",
        format!(
            "allowed_hosts = [\"http://{addr}\"]\n[http]\nmax_response_mb = 1\nfirst_byte_timeout_seconds = 0.5\n"
        )
        .as_bytes(),
    );
    let dir = plugins.path().display().to_string();
    let server = Server::start(&["--plugin-dir", &dir], plugins.path());
    let mut tasks = server.tasks().await;

    let meta = tasks
        .create_task(fetch(&format!("http://{addr}/small")))
        .await
        .expect("a small answer")
        .into_inner()
        .resource_meta;
    let seen: serde_json::Value = serde_json::from_slice(&meta).expect("JSON");
    assert_eq!(
        seen,
        serde_json::json!({"status": 200, "bytes": 10, "body": "0123456789"})
    );

    let status = tasks
        .create_task(fetch(&format!("http://{addr}/big")))
        .await
        .expect_err("over the cap");
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    assert!(
        status
            .message()
            .contains("larger than the host allows (1048576 bytes"),
        "the cap is named: {}",
        status.message()
    );

    let status = tasks
        .create_task(fetch(&format!("http://{addr}/slow")))
        .await
        .expect_err("timed out");
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "a timeout is retryable: {}",
        status.message()
    );
    assert!(
        status.message().contains("timed out"),
        "{}",
        status.message()
    );
}

/// `/stream`: 3 MiB with no `content-length`; `/drip`: one chunk, then
/// nothing for 5 seconds.
async fn start_streaming_service() -> Endpoint {
    use axum::body::{Body, Bytes};
    let app = Router::new()
        .route(
            "/stream",
            get(|| async {
                let chunks =
                    (0..48).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 64 << 10])));
                Body::from_stream(tokio_stream::iter(chunks))
            }),
        )
        .route("/drip", get(|| async { Body::from_stream(drip()) }));
    Endpoint::serve(app, Serve::plain()).await
}

/// One chunk at once, the next after 5 seconds.
fn drip() -> impl tokio_stream::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    use tokio_stream::StreamExt;
    tokio_stream::iter([false, true]).then(|late| async move {
        if late {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Ok(axum::body::Bytes::from_static(b"chunk"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_failing_midway_carries_its_error_code_to_both_sdks() {
    let service = start_streaming_service().await;
    let addr = service.addr();
    let manifest = format!(
        "allowed_hosts = [\"http://{addr}\"]\n[http]\nmax_response_mb = 1\nbetween_bytes_timeout_seconds = 0.5\n"
    );
    let plugins = Workspace::with_components(&["faulty", "faulty-py"]);
    plugins.write("faulty.toml", manifest.as_bytes());
    plugins.write("faulty-py.toml", manifest.as_bytes());
    let dir = plugins.path().display().to_string();
    let server = Server::start(&["--plugin-dir", &dir], plugins.path());
    let mut tasks = server.tasks().await;
    let python_fetch = |url: &str| {
        literals::create_request(
            "faulty_py",
            &TypedInputs(vec![
                ("fault", string("fetch"), simple(SimpleType::String)),
                ("url", string(url), simple(SimpleType::String)),
            ]),
        )
    };
    for (sdk, request) in [
        ("rust", fetch(&format!("http://{addr}/stream"))),
        ("python", python_fetch(&format!("http://{addr}/stream"))),
    ] {
        let status = tasks.create_task(request).await.expect_err("over the cap");
        assert_eq!(status.code(), Code::Internal, "{sdk}: {}", status.message());
        assert!(
            status
                .message()
                .contains("larger than the host allows (1048576 bytes"),
            "{sdk}: the cap is named: {}",
            status.message()
        );
    }
    for (sdk, request) in [
        ("rust", fetch(&format!("http://{addr}/drip"))),
        ("python", python_fetch(&format!("http://{addr}/drip"))),
    ] {
        let status = tasks.create_task(request).await.expect_err("stalled");
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{sdk}: a stalled body is a retryable timeout: {}",
            status.message()
        );
        assert!(
            status.message().contains("connection-read-timeout"),
            "{sdk}: {}",
            status.message()
        );
    }
}
