//! OpenTelemetry traces, exported by the real binary to a collector on
//! loopback: a Databricks task's create, get and delete as span trees in
//! the Flyte run's trace (the id flyteplugins-otel derives), carried from
//! create to the later calls in the resource meta; `traceparent` on the
//! outbound request; an incoming `traceparent` continued; no secret in any
//! attribute; and no exporter traffic when nothing configures one.

use std::time::Duration;

use flyte_connect::proto::{
    connector::{CreateTaskRequest, TaskExecutionMetadata},
    core::{
        NodeExecutionIdentifier, TaskExecutionIdentifier, TaskTemplate,
        WorkflowExecutionIdentifier, task_execution::Phase,
    },
};
use flyte_connect_e2e::{
    Server, Workspace,
    fake_databricks::{self, FakeDatabricks},
    hosted::{HostedConnector, connection},
    literals::{self, TypedInputs},
    otlp::{Collector, RecordedSpan},
};
use serde_json::Value;

const TOKEN: &str = "dapi-trace-test-secret-token";
const SECRET: &str = "databricks_token";
/// flyteplugins-otel's test vector: the trace id of run
/// org1/flytesnacks/development/r-abc123.
const RUN_TRACE_ID: &str = "2d0f00b3a3014cf3a976b3851a527bc5";

fn run_metadata() -> TaskExecutionMetadata {
    TaskExecutionMetadata {
        task_execution_id: Some(TaskExecutionIdentifier {
            node_execution_id: Some(NodeExecutionIdentifier {
                node_id: "a0".into(),
                execution_id: Some(WorkflowExecutionIdentifier {
                    org: "org1".into(),
                    project: "flytesnacks".into(),
                    domain: "development".into(),
                    name: "r-abc123".into(),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rpc_name(rpc: &str) -> String {
    format!("flyteidl2.connector.AsyncConnectorService/{rpc}")
}

fn one<'a>(
    spans: &'a [RecordedSpan],
    what: &str,
    pick: impl Fn(&RecordedSpan) -> bool,
) -> &'a RecordedSpan {
    let found: Vec<&RecordedSpan> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "one {what} span, found:\n{spans:#?}");
    found[0]
}

fn children<'a>(spans: &'a [RecordedSpan], parent: &RecordedSpan) -> Vec<&'a RecordedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databricks_task_is_a_span_tree_per_call_in_the_runs_trace() {
    span_tree_per_call("databricks", "databricks", "").await;
}

/// The same of the Python connector, of the async world: its requests are
/// made through `waits` by the instance's driver, under each call's span
/// all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_connectors_calls_of_the_async_world_are_span_trees_too() {
    span_tree_per_call(
        "databricks-py",
        "databricks_py",
        "[env]\nFLYTE_CONNECTOR_TASK_TYPE = \"databricks_py\"\n",
    )
    .await;
}

/// A create → get → delete of `component` (task type `task_type`, its
/// manifest saying `manifest_extra` beside the allow-list): three root
/// spans in the run's trace, each with its parts and one request.
async fn span_tree_per_call(component: &str, task_type: &'static str, manifest_extra: &str) {
    let collector = Collector::start().await;
    let fake = FakeDatabricks::start(TOKEN).await;
    let manifest = format!(
        "allowed_hosts = [\"http://{}\"]\n{manifest_extra}",
        fake.addr()
    );
    let mut env: Vec<(&str, String)> = collector.env();
    env.push(("RUST_LOG", "info".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let hosted = HostedConnector::start_with_args(
        component,
        task_type,
        &manifest,
        &["--log-format", "json"],
        &env,
    );
    let with_token = connection(&[(SECRET, TOKEN)]);
    let request = CreateTaskRequest {
        template: Some(TaskTemplate {
            r#type: task_type.to_owned(),
            ..fake_databricks::task_template(&fake.base_url(), fake_databricks::job_conf("traced"))
        }),
        task_execution_metadata: Some(run_metadata()),
        connection: Some(with_token.clone()),
        ..Default::default()
    };
    let meta = hosted.create(request).await.expect("CreateTask");
    // The meta is the connector's JSON with the trace after it as
    // whitespace: what the Python connector reads is unchanged.
    let text = String::from_utf8(meta.clone()).expect("UTF-8");
    assert!(text.starts_with(r#"{"databricks_instance": ""#), "{text:?}");
    assert!(text.ends_with(char::is_whitespace), "{text:?}");
    let parsed: Value = serde_json::from_str(&text).expect("still one JSON document");
    assert_eq!(parsed["run_id"], "1000");
    // Later calls, with that meta, find the run's trace.
    let resource = hosted.get(&meta, &with_token).await;
    assert_eq!(
        resource.phase(),
        Phase::Initializing,
        "{}",
        resource.message
    );
    hosted.delete(&meta, &with_token).await.expect("DeleteTask");

    let spans = collector
        .wait_for("the three calls and their requests", |spans| {
            spans
                .iter()
                .filter(|s| s.attribute("http.request.method").is_some())
                .count()
                >= 3
                && spans
                    .iter()
                    .filter(|s| s.name.starts_with("flyteidl2."))
                    .count()
                    >= 3
        })
        .await;
    for (rpc, operation, method) in [
        ("CreateTask", "create", "POST"),
        ("GetTask", "get", "GET"),
        ("DeleteTask", "delete", "POST"),
    ] {
        let call = one(&spans, rpc, |s| s.name == rpc_name(rpc));
        // A root of the run's trace, beside the task's own spans.
        assert_eq!(call.trace_id, RUN_TRACE_ID, "{call:#?}");
        assert_eq!(call.parent_span_id, "", "{call:#?}");
        assert_eq!(call.attribute("task_type"), Some(task_type));
        assert_eq!(call.attribute("operation"), Some(operation));
        assert_eq!(call.attribute("outcome"), Some("ok"));
        assert_eq!(call.attribute("rpc.grpc.status_code"), Some("0"));
        assert_eq!(call.service, "flyte-connect");
        let under: Vec<&str> = children(&spans, call)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        for part in ["queue", "instantiate", "guest_call"] {
            assert!(under.contains(&part), "{rpc} has no {part} span: {under:?}");
        }
        let instantiate = children(&spans, call)
            .into_iter()
            .find(|s| s.name == "instantiate")
            .expect("instantiate");
        assert_eq!(instantiate.attribute("start"), Some("fresh"));
        let guest = children(&spans, call)
            .into_iter()
            .find(|s| s.name == "guest_call")
            .expect("guest_call");
        let requests = children(&spans, guest);
        assert_eq!(requests.len(), 1, "{rpc}: {requests:#?}");
        let request = requests[0];
        assert_eq!(request.trace_id, RUN_TRACE_ID);
        assert_eq!(request.name, format!("{method} 127.0.0.1"));
        assert_eq!(request.attribute("http.request.method"), Some(method));
        assert_eq!(request.attribute("http.response.status_code"), Some("200"));
        assert_eq!(request.attribute("server.address"), Some("127.0.0.1"));
        if rpc == "CreateTask" {
            // The workspace received the span it was sent from.
            assert_eq!(
                fake.traceparents(),
                [Some(format!("00-{RUN_TRACE_ID}-{}-01", request.span_id))]
            );
        }
    }
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(TOKEN),
                "{key} of {} carries the token",
                span.name
            );
        }
    }
    // The JSON log names the trace of each call.
    let log = hosted.server.output.text();
    let traced = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["span"]["trace_id"] == RUN_TRACE_ID)
        .count();
    assert!(traced > 0, "no log line names the trace:\n{log}");
    assert!(!log.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_traceparent_is_continued() {
    let collector = Collector::start().await;
    let plugins = Workspace::with_components(&["echo"]);
    let dir = plugins.path().display().to_string();
    let env = collector.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_with_env(&["--plugin-dir", &dir], plugins.path(), &env);
    let mut request = tonic::Request::new(literals::create_request("echo", &TypedInputs(vec![])));
    request.metadata_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .expect("ASCII"),
    );
    server
        .tasks()
        .await
        .create_task(request)
        .await
        .expect("CreateTask");
    let spans = collector
        .wait_for("the create", |spans| {
            spans.iter().any(|s| s.name == rpc_name("CreateTask"))
        })
        .await;
    let call = one(&spans, "CreateTask", |s| s.name == rpc_name("CreateTask"));
    assert_eq!(call.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(call.parent_span_id, "b7ad6b7169203331");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported() {
    // A collector on the default OTLP/gRPC port: a server that exported by
    // default would reach it.
    let collector = Collector::start_on(4317).await;
    let plugins = Workspace::with_components(&["echo"]);
    let dir = plugins.path().display().to_string();
    let server = Server::start_with_env(
        &["--plugin-dir", &dir],
        plugins.path(),
        &[
            ("OTEL_SERVICE_NAME", "flyte-connect-test"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let mut tasks = server.tasks().await;
    for _ in 0..5 {
        tasks
            .create_task(literals::create_request("echo", &TypedInputs(vec![])))
            .await
            .expect("CreateTask");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(collector.exports(), 0);
    assert!(
        !server.output.text().contains("trace_id"),
        "{}",
        server.output.text()
    );
}
