//! The server's log as a log pipeline reads it: one JSON object per line
//! with `--log-format json`, the call's fields on what a call logs, no
//! secret in any field; and failed requests logged at most once per
//! interval per cause, however many a client sends.

use flyte_connect::proto::{
    connector::{CreateTaskRequest, GetTaskRequest},
    core::Connection,
};
use flyte_connect_e2e::{
    Server, Workspace,
    literals::{self, TypedInputs, category},
    metric_value,
};
use serde_json::Value;

/// A secret the pod's credentials and a request's connection carry.
const SECRET: &str = "s3cr3t-pod-credential-value";
const REQUEST_SECRET: &str = "s3cr3t-request-connection-value";

fn start(extra: &[&str]) -> ([Workspace; 2], Server) {
    let plugins = Workspace::with_components(&["echo", "faulty"]);
    let secrets = Workspace::with_components(&[]);
    let token = secrets.write("api_token", SECRET.as_bytes());
    plugins.write(
        "faulty.toml",
        format!(
            "[credentials]\napi_token = {{ file = \"{}\" }}\n",
            token.display()
        )
        .as_bytes(),
    );
    let dir = plugins.path().display().to_string();
    let credentials = secrets.path().display().to_string();
    let mut args = vec![
        "--plugin-dir",
        dir.as_str(),
        "--credentials-dir",
        credentials.as_str(),
    ];
    args.extend_from_slice(extra);
    let server = Server::start_with_env(&args, plugins.path(), &[("RUST_LOG", "debug")]);
    ([plugins, secrets], server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_calls_fields_and_no_secret() {
    let (_plugins, server) = start(&["--log-format", "json"]);
    let mut tasks = server.tasks().await;
    // A guest that panics (its lines go to the log), with a secret in the
    // request's connection, and one that answers.
    let mut request: CreateTaskRequest = literals::create_request("panic", &TypedInputs(vec![]));
    request.connection = Some(Connection {
        secrets: [("token".to_owned(), REQUEST_SECRET.to_owned())].into(),
        ..Default::default()
    });
    let _ = tasks.create_task(request).await;
    let _ = tasks
        .create_task(literals::create_request("inspect", &TypedInputs(vec![])))
        .await;
    let output = server
        .output
        .once("the guest's panic", |text| {
            text.contains("panicked on purpose")
        })
        .await;
    let mut objects = Vec::new();
    // Every line, standard output's too: the connector table is logged
    // as objects instead of drawn.
    for line in output.lines() {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not one JSON object ({err}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(object.get(key).is_some(), "no {key}: {line}");
        }
        objects.push(object);
    }
    let serving: Vec<_> = objects
        .iter()
        .filter(|o| o["message"] == "serving")
        .map(|o| (o["connector"].as_str(), o["task_types"].as_str()))
        .collect();
    assert_eq!(serving.len(), 2, "{serving:?}");
    assert!(serving.contains(&(Some("Echo Connector"), Some("echo (0)"))));
    let warned = objects
        .iter()
        .find(|o| o["level"] == "WARN" && o["span"]["name"] == "rpc")
        .expect("the failed create logged");
    assert_eq!(warned["span"]["task_type"], "panic");
    assert_eq!(warned["span"]["operation"], "create");
    assert_eq!(warned["code"], "Internal");
    let guest = objects
        .iter()
        .find(|o| {
            o["target"] == "connector"
                && o["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("panicked on purpose"))
        })
        .expect("the guest's line");
    assert_eq!(guest["connector"], "Faulty Connector");
    assert_eq!(guest["operation"], "create");
    assert_eq!(guest["span"]["task_type"], "panic");
    for secret in [SECRET, REQUEST_SECRET] {
        assert!(!output.contains(secret), "a secret reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_grow_the_log_with_bad_requests() {
    let (_plugins, server) = start(&[]);
    let mut tasks = server.tasks().await;
    let bad = GetTaskRequest {
        task_category: category("echo"),
        resource_meta: b"not a resource meta".to_vec(),
        ..Default::default()
    };
    for _ in 0..1000 {
        let status = tasks.get_task(bad.clone()).await.expect_err("a bad meta");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    // Ever new task types share one cause too.
    for n in 0..200 {
        let unknown = GetTaskRequest {
            task_category: category(&format!("made-up-{n}")),
            resource_meta: b"{}".to_vec(),
            ..Default::default()
        };
        let status = tasks.get_task(unknown).await.expect_err("no such type");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
    let output = server
        .output
        .once("the failures", |text| text.contains("made-up-0"))
        .await;
    let warnings = output.lines().filter(|l| l.contains(" WARN ")).count();
    // One per cause, or two if the run crossed an interval (10 s) each.
    assert!(
        (2..=4).contains(&warnings),
        "{warnings} WARN lines for 1,200 bad requests:\n{output}"
    );
    // The metrics count every one.
    let metrics = server.metrics_text();
    let failed = metric_value(
        &metrics,
        "flyte_connector_requests_failure_total",
        &[
            ("task_type", "echo"),
            ("operation", "get"),
            ("error_code", "400"),
        ],
    );
    assert!(failed.is_some_and(|n| n >= 1000.0), "{failed:?}\n{metrics}");
}
