//! Limits on what a connector returns: past one, the call fails with
//! INTERNAL and a message naming the limit, and the server serves on.

use flyte_connect::proto::{
    connector::{GetTaskLogsRequest, GetTaskMetricsRequest, GetTaskRequest},
    core::SimpleType,
};
use flyte_connect_e2e::{
    Server, Workspace,
    literals::{self, TypedInputs, category, int, simple, string},
};
use serde_json::json;
use tonic::{Code, Status};

fn start() -> (Workspace, Server) {
    let plugins = Workspace::with_components(&["echo", "faulty"]);
    let dir = plugins.path().display().to_string();
    let server = Server::start(
        &[
            "--plugin-dir",
            &dir,
            "--max-resource-meta-size",
            "1KiB",
            "--max-outputs-size",
            "2KiB",
            "--max-custom-info-size",
            "1KiB",
            "--max-log-page-size",
            "1KiB",
            "--max-metrics-size",
            "3KiB",
            "--max-message-size",
            "4KiB",
        ],
        plugins.path(),
    );
    (plugins, server)
}

/// An echo resource meta whose one input is `size` characters long.
fn echo_meta(size: usize) -> Vec<u8> {
    json!({
        "inputs": {"s": "x".repeat(size)},
        "input_types": {"s": {"simple": "STRING"}},
    })
    .to_string()
    .into_bytes()
}

fn assert_too_large(status: &Status, op_and_type: &str, what: &str, limit: usize) {
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    let message = status.message();
    assert!(
        message.starts_with(&format!("failed to {op_and_type} task with error:\n")),
        "{message}"
    );
    assert!(
        message.contains(&format!("the connector returned {what} of "))
            && message.contains(&format!("more than the limit of {limit} bytes")),
        "{message}"
    );
}

#[tokio::test]
async fn each_limit_fails_its_call_and_names_itself() {
    let (_plugins, server) = start();
    let mut tasks = server.tasks().await;

    let big_input = TypedInputs(vec![(
        "s",
        string(&"x".repeat(2000)),
        simple(SimpleType::String),
    )]);
    let status = tasks
        .create_task(literals::create_request("echo", &big_input))
        .await
        .expect_err("meta too large");
    assert_too_large(&status, "create echo", "a resource meta", 1024);

    let status = tasks
        .get_task(GetTaskRequest {
            task_category: category("echo"),
            resource_meta: echo_meta(3000),
            ..Default::default()
        })
        .await
        .expect_err("outputs too large");
    assert_too_large(&status, "get echo", "outputs", 2048);

    let status = tasks
        .get_task(GetTaskRequest {
            task_category: category("inspect"),
            resource_meta: json!({"blob": "x".repeat(1500)}).to_string().into_bytes(),
            ..Default::default()
        })
        .await
        .expect_err("custom_info too large");
    assert_too_large(&status, "get inspect", "custom_info", 1024);

    let status = tasks
        .get_task_logs(GetTaskLogsRequest {
            task_category: category("echo"),
            resource_meta: echo_meta(1500),
            ..Default::default()
        })
        .await
        .expect_err("log page too large");
    assert_too_large(&status, "get logs for echo", "a log page", 1024);

    let queries = |n: usize| (0..n).map(|i| format!("q{i:03}")).collect();
    let status = tasks
        .get_task_metrics(GetTaskMetricsRequest {
            task_category: category("echo"),
            resource_meta: echo_meta(1),
            queries: queries(300),
            ..Default::default()
        })
        .await
        .expect_err("metrics too large");
    assert_too_large(&status, "get metrics for echo", "metrics", 3072);

    // Within the metrics limit, but the response is over the message size.
    let status = tasks
        .get_task_metrics(GetTaskMetricsRequest {
            task_category: category("echo"),
            resource_meta: echo_meta(1),
            queries: queries(150),
            ..Default::default()
        })
        .await
        .expect_err("response too large");
    assert_too_large(&status, "get metrics for echo", "a response", 4096);

    // Calls within the limits still work.
    let small = TypedInputs(vec![("x", int(1), simple(SimpleType::Integer))]);
    let meta = tasks
        .create_task(literals::create_request("echo", &small))
        .await
        .expect("a small create")
        .into_inner()
        .resource_meta;
    tasks
        .get_task(GetTaskRequest {
            task_category: category("echo"),
            resource_meta: meta,
            ..Default::default()
        })
        .await
        .expect("a small get");
}

#[tokio::test]
async fn an_enormous_timeout_is_refused_at_load_and_on_the_command_line() {
    for (manifest, key) in [
        ("timeout_seconds = 1e19\n", "timeout_seconds"),
        (
            "[http]\nfirst_byte_timeout_seconds = 1.8e19\n",
            "http.first_byte_timeout_seconds",
        ),
    ] {
        let plugins = Workspace::with_components(&["faulty"]);
        plugins.write("faulty.toml", manifest.as_bytes());
        let dir = plugins.path().display().to_string();
        let server = Server::start(&["--plugin-dir", &dir], plugins.path());
        assert!(server.connector_names().await.is_empty(), "{manifest}");
        let output = server.output.text();
        assert!(
            output
                .lines()
                .any(|l| l.contains("WARN") && l.contains(key) && l.contains("at most 86400")),
            "{manifest}:\n{output}"
        );
    }
    let plugins = Workspace::new();
    let (status, output) = flyte_connect_e2e::run_to_exit(
        &["c0", "--port", "0", "--idle-instance-timeout", "1e19"],
        plugins.path(),
        std::time::Duration::from_secs(30),
    );
    assert!(!status.success(), "{output}");
    assert!(output.contains("--idle-instance-timeout"), "{output}");
}
