//! Outbound HTTP limits the host sets, and a manifest overrides: the
//! response-size cap and the first-byte timeout, through a component that
//! fetches a URL from a fake service on loopback.

use std::time::Duration;

use axum::{Router, routing::get};
use flyte_connect::proto::core::SimpleType;
use flyte_connect_e2e::{
    Server, Workspace,
    literals::{self, TypedInputs, simple, string},
};
use tonic::Code;

/// `/big`: 3 MiB; `/small`: 10 bytes; `/slow`: answers after 5 seconds.
async fn start_service() -> std::net::SocketAddr {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake service");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn fetch(url: &str) -> flyte_connect::proto::connector::CreateTaskRequest {
    literals::create_request(
        "fetch",
        &TypedInputs(vec![("url", string(url), simple(SimpleType::String))]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_sets_the_response_cap_and_the_first_byte_timeout() {
    let addr = start_service().await;
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
    assert_eq!(seen, serde_json::json!({"status": 200, "bytes": 10}));

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
