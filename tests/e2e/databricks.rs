//! The Databricks connector end to end: the real binary, each build of the
//! connector (`databricks.wasm` in Rust, `databricks-py.wasm` in Python), and
//! a fake Databricks workspace on loopback — submit, poll every kind of run,
//! cancel, the Python connector's metas, a refused token, retryable
//! failures, the workspace from the manifest, and the outbound-HTTP policy.
//! The token never reaches the log. Every test runs against both builds
//! (`databricks::rust::*`, `databricks::python::*`).

use std::time::{Duration, Instant};

use flyte_connect::proto::{
    connector::{
        CreateTaskRequest, GetTaskRequest, ListConnectorsRequest, Resource, TaskCategory,
        TaskExecutionMetadata,
    },
    core::{
        NodeExecutionIdentifier, TaskExecutionIdentifier, TaskTemplate, task_execution::Phase,
        task_log::LinkType,
    },
};
use flyte_connect_e2e::{
    Server,
    fake_databricks::{self, FakeDatabricks, IMAGE},
    hosted::{HostedConnector, connection},
    metric_value,
};
use serde_json::{Value, json};
use tonic::Code;

const TOKEN: &str = "dapi-secret-token-0123456789";
const SECRET: &str = "databricks_token";

/// One build of the Databricks connector.
#[derive(Debug, Clone, Copy)]
struct Component {
    /// The component's file stem in the test components.
    file: &'static str,
    /// The connector's name, as ListConnectors and the metrics give it.
    name: &'static str,
}

const RUST: Component = Component {
    file: "databricks",
    name: "Databricks Connector",
};

const PYTHON: Component = Component {
    file: "databricks-py",
    name: "Databricks Connector (Python)",
};

/// Runs each test (an `async fn(Component)` below) against both builds:
/// `rust::TEST` and `python::TEST`.
macro_rules! for_both_components {
    ($($test:ident),* $(,)?) => {
        mod rust {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::RUST).await;
                }
            )*
        }

        mod python {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::PYTHON).await;
                }
            )*
        }
    };
}

for_both_components!(
    a_run_is_submitted_then_polled_to_success,
    failed_queued_and_internal_error_runs_map_to_their_phases,
    delete_cancels_the_run_and_is_idempotent,
    a_meta_written_by_the_python_connector_is_polled_and_cancelled,
    a_refused_token_names_the_workspace_never_the_token,
    transient_failures_are_retryable,
    throttling_is_absorbed_within_the_calls_deadline,
    a_template_the_connector_cannot_run_is_invalid_argument,
    the_workspace_comes_from_the_manifest_when_the_task_names_none,
    hosts_the_manifest_does_not_allow_are_denied_before_any_request,
    an_invalid_rule_keeps_the_plugin_out_with_a_warning_naming_it,
);

struct Setup {
    fake: FakeDatabricks,
    hosted: HostedConnector,
}

impl Setup {
    /// `component` serving task type `databricks`, with a manifest of
    /// `allowed_hosts` (`{fake}` stands for the fake's `127.0.0.1:PORT`)
    /// followed by `rest`, and the fake workspace.
    async fn start_with(component: Component, allowed_hosts: &[&str], rest: &str) -> Self {
        let fake = FakeDatabricks::start(TOKEN).await;
        let fake_addr = fake.addr().to_string();
        let rules: Vec<String> = allowed_hosts
            .iter()
            .map(|rule| format!("{:?}", rule.replace("{fake}", &fake_addr)))
            .collect();
        let manifest = format!(
            "allowed_hosts = [{}]\n{}",
            rules.join(", "),
            rest.replace("{fake}", &fake_addr)
        );
        let hosted = HostedConnector::start(component.file, "databricks", &manifest);
        Self { fake, hosted }
    }

    async fn start(component: Component, allowed_hosts: &[&str]) -> Self {
        Self::start_with(component, allowed_hosts, "").await
    }

    async fn allowed(component: Component) -> Self {
        Self::start(component, &["http://{fake}"]).await
    }

    fn server(&self) -> &Server {
        &self.hosted.server
    }

    fn template(&self, databricks_conf: Value) -> TaskTemplate {
        fake_databricks::task_template(&self.fake.base_url(), databricks_conf)
    }

    fn create_request(&self, run_name: &str, token: &str) -> CreateTaskRequest {
        CreateTaskRequest {
            template: Some(self.template(fake_databricks::job_conf(run_name))),
            connection: Some(connection(&[(SECRET, token)])),
            ..Default::default()
        }
    }

    async fn create(&self, run_name: &str) -> Result<Vec<u8>, tonic::Status> {
        self.hosted
            .create(self.create_request(run_name, TOKEN))
            .await
    }

    async fn get(&self, meta: &[u8]) -> Resource {
        self.hosted.get(meta, &connection(&[(SECRET, TOKEN)])).await
    }

    async fn delete(&self, meta: &[u8]) -> Result<(), tonic::Status> {
        self.hosted
            .delete(meta, &connection(&[(SECRET, TOKEN)]))
            .await
    }

    /// The phases of `polls` successive GetTask calls.
    async fn phases(&self, meta: &[u8], polls: usize) -> Vec<Phase> {
        self.hosted
            .phases(meta, &connection(&[(SECRET, TOKEN)]), polls)
            .await
    }

    /// Nothing the server printed contains the token.
    fn assert_token_never_logged(&self) {
        self.hosted.assert_never_logged(&[TOKEN]);
    }
}

async fn a_run_is_submitted_then_polled_to_success(component: Component) {
    let setup = Setup::allowed(component).await;
    assert_eq!(setup.server().connector_names().await, [component.name]);
    let meta = setup.create("nightly").await.expect("CreateTask");
    // The Python connector's meta, byte for byte.
    assert_eq!(
        String::from_utf8(meta.clone()).expect("UTF-8"),
        format!(
            r#"{{"databricks_instance": "{}", "run_id": "1000"}}"#,
            setup.fake.base_url()
        )
    );
    let submitted = &setup.fake.submitted()[0];
    assert_eq!(submitted["run_name"], "nightly");
    assert_eq!(submitted["timeout_seconds"], 3600);
    let cluster = &submitted["new_cluster"];
    assert_eq!(cluster["docker_image"]["url"], IMAGE);
    assert_eq!(cluster["spark_conf"]["spark.driver.memory"], "1000M");
    assert_eq!(
        cluster["spark_env_vars"]["FLYTE_INTERNAL_EXECUTION_ID"],
        "exec-1"
    );
    assert_eq!(
        submitted["spark_python_task"],
        json!({
            "python_file": "flyteplugins/databricks/entrypoint.py",
            "parameters": ["a0", "--inputs", "s3://bucket/inputs.pb"],
            "source": "GIT",
        })
    );
    assert_eq!(submitted["git_source"]["git_provider"], "gitHub");

    let first = setup.get(&meta).await;
    assert_eq!(first.phase(), Phase::Initializing);
    assert_eq!(first.message, "Waiting for cluster");
    assert_eq!(first.log_links[0].name, "Databricks Console");
    // The Python connector leaves the type at its default.
    assert_eq!(first.log_links[0].link_type(), LinkType::External);
    assert_eq!(
        first.log_links[0].uri,
        format!("{}/#job/2000/run/1000", setup.fake.base_url())
    );
    assert_eq!(
        setup.phases(&meta, 2).await,
        [Phase::Running, Phase::Succeeded]
    );
    let calls = setup.fake.calls();
    assert_eq!((calls.submit, calls.get, calls.unauthorized), (1, 3, 0));
    let text = setup.server().metrics_text();
    let labels = [
        ("connector", component.name),
        ("host", &format!("http://{}", setup.fake.addr())),
        ("status", "2xx"),
    ];
    assert_eq!(
        metric_value(&text, "flyte_connector_outbound_requests_total", &labels),
        Some(4.0),
        "{text}"
    );
    setup.assert_token_never_logged();
}

async fn failed_queued_and_internal_error_runs_map_to_their_phases(component: Component) {
    let setup = Setup::allowed(component).await;
    let failed = setup.create("fails").await.expect("create");
    assert_eq!(setup.get(&failed).await.phase(), Phase::Initializing);
    let last = setup.get(&failed).await;
    assert_eq!(last.phase(), Phase::Failed);
    assert!(
        last.message.contains("ZeroDivisionError"),
        "{}",
        last.message
    );

    let internal = setup.create("internal-error").await.expect("create");
    assert_eq!(
        setup.phases(&internal, 2).await,
        [Phase::Initializing, Phase::RetryableFailed]
    );

    // States the Python connector fails on are runs still on their way.
    let queued = setup.create("queued").await.expect("create");
    assert_eq!(
        setup.phases(&queued, 5).await,
        [
            Phase::Queued,
            Phase::WaitingForResources,
            Phase::Running,
            Phase::Running,
            Phase::Succeeded
        ]
    );
    setup.assert_token_never_logged();
}

async fn delete_cancels_the_run_and_is_idempotent(component: Component) {
    let setup = Setup::allowed(component).await;
    let meta = setup.create("to-cancel").await.expect("create");
    setup.delete(&meta).await.expect("DeleteTask");
    assert!(setup.fake.cancelled(1000));
    let resource = setup.get(&meta).await;
    assert_eq!(resource.phase(), Phase::Failed);
    assert!(
        resource.message.contains("cancelled"),
        "{}",
        resource.message
    );
    setup.delete(&meta).await.expect("a second DeleteTask");
    assert_eq!(setup.fake.calls().cancel, 2);
}

async fn a_meta_written_by_the_python_connector_is_polled_and_cancelled(component: Component) {
    let setup = Setup::allowed(component).await;
    setup.fake.add_run(77);
    // What flyteplugins-databricks' connector stored: json.dumps(asdict(meta)).
    let meta = format!(
        r#"{{"databricks_instance": "{}", "run_id": "77"}}"#,
        setup.fake.base_url()
    );
    assert_eq!(
        setup.get(meta.as_bytes()).await.phase(),
        Phase::Initializing
    );
    setup.delete(meta.as_bytes()).await.expect("DeleteTask");
    assert!(setup.fake.cancelled(77));
}

async fn a_refused_token_names_the_workspace_never_the_token(component: Component) {
    let setup = Setup::allowed(component).await;
    let wrong = "dapi-wrong-token-999";
    let status = setup
        .server()
        .tasks()
        .await
        .create_task(setup.create_request("nightly", wrong))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    assert!(
        status.message().contains(&setup.fake.base_url())
            && status.message().contains("refused the API token"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains(wrong), "{}", status.message());
    assert!(!setup.server().output.text().contains(wrong));
    assert_eq!(setup.fake.calls().unauthorized, 1);
}

async fn transient_failures_are_retryable(component: Component) {
    let setup = Setup::allowed(component).await;
    // A submit without an idempotency token is never repeated: UNAVAILABLE
    // at once, so Flyte's executor retries the create.
    for run_name in ["throttled", "broken"] {
        let status = setup.create(run_name).await.expect_err(run_name);
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        assert!(
            status
                .message()
                .starts_with("failed to create databricks task with error:\n"),
            "{}",
            status.message()
        );
    }
    assert_eq!(setup.fake.calls().submit, 2, "neither submit was repeated");
    // A poll answered 503 is repeated within the call: GetTask answers the
    // run, and the executor never sees the failure it would count.
    let meta = setup.create("flaky-poll").await.expect("create");
    assert_pending(&setup.get(&meta).await);
    assert_eq!(
        setup.fake.calls().submit,
        3,
        "one run was submitted, and no second"
    );
    let metrics = setup.server().metrics_text();
    let host = format!("http://{}", setup.fake.addr());
    let retries = metric_value(
        &metrics,
        "flyte_connector_outbound_retries_total",
        &[("connector", component.name), ("host", &host)],
    );
    assert_eq!(retries, Some(1.0), "{metrics}");
}

/// A run's first poll answered its first state: PENDING, so INITIALIZING.
fn assert_pending(resource: &Resource) {
    assert_eq!(
        resource.phase(),
        Phase::Initializing,
        "{}",
        resource.message
    );
}

/// Throttled polls wait for the workspace's `Retry-After`; a workspace that
/// never recovers is given up inside the client's deadline, as UNAVAILABLE;
/// a throttled submit carrying its idempotency token is repeated and starts
/// one run.
async fn throttling_is_absorbed_within_the_calls_deadline(component: Component) {
    let setup = Setup::allowed(component).await;
    let meta = setup.create("throttled-polls").await.expect("create");
    let started = Instant::now();
    assert_pending(&setup.get(&meta).await);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two polls answered Retry-After: 1, yet GetTask took {:?}",
        started.elapsed()
    );

    let meta = setup.create("unavailable").await.expect("create");
    let deadline = Duration::from_secs(3);
    let mut request = tonic::Request::new(GetTaskRequest {
        task_category: Some(TaskCategory {
            name: "databricks".into(),
            version: 0,
        }),
        resource_meta: meta,
        connection: Some(connection(&[(SECRET, TOKEN)])),
        ..Default::default()
    });
    request.set_timeout(deadline);
    let started = Instant::now();
    let status = setup
        .server()
        .tasks()
        .await
        .get_task(request)
        .await
        .expect_err("the workspace never recovers");
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("503"), "{}", status.message());
    assert!(
        took < deadline,
        "answered after {took:?}, past the deadline"
    );
    assert!(
        setup.fake.calls().get >= 3,
        "the poll was repeated: {:?}",
        setup.fake.calls()
    );

    let mut request = setup.create_request("throttled-once", TOKEN);
    request.task_execution_metadata = Some(TaskExecutionMetadata {
        task_execution_id: Some(TaskExecutionIdentifier {
            node_execution_id: Some(NodeExecutionIdentifier {
                node_id: "n0".into(),
                ..Default::default()
            }),
            retry_attempt: 1,
            ..Default::default()
        }),
        ..Default::default()
    });
    let submits = setup.fake.calls().submit;
    setup
        .hosted
        .create(request)
        .await
        .expect("a repeated submit");
    assert_eq!(setup.fake.calls().submit, submits + 2);
    let bodies = setup.fake.submitted();
    let tokens: Vec<&Value> = bodies[bodies.len() - 2..]
        .iter()
        .map(|body| &body["idempotency_token"])
        .collect();
    assert!(
        tokens[0].as_str().is_some_and(|t| t.len() == 64) && tokens[0] == tokens[1],
        "{tokens:?}"
    );
}

async fn a_template_the_connector_cannot_run_is_invalid_argument(component: Component) {
    let setup = Setup::allowed(component).await;
    let mut tasks = setup.server().tasks().await;
    let mut request = setup.create_request("x", TOKEN);
    request.template = Some(setup.template(json!({"run_name": "no cluster"})));
    let status = tasks.create_task(request).await.expect_err("no cluster");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("either existing_cluster_id or new_cluster"),
        "{}",
        status.message()
    );
    let mut request = setup.create_request("x", TOKEN);
    request.connection = None;
    let status = tasks.create_task(request).await.expect_err("no token");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("databricks_token"),
        "{}",
        status.message()
    );
    assert_eq!(setup.fake.calls().total(), 0);
}

async fn the_workspace_comes_from_the_manifest_when_the_task_names_none(component: Component) {
    let setup = Setup::start_with(
        component,
        &["http://{fake}"],
        "[env]\nFLYTE_DATABRICKS_INSTANCE = \"http://{fake}/\"\n",
    )
    .await;
    let mut request = setup.create_request("nightly", TOKEN);
    request.template = Some(fake_databricks::task_template(
        "",
        fake_databricks::job_conf("nightly"),
    ));
    let meta = setup.hosted.create(request).await.expect("CreateTask");
    // The meta names the workspace as the manifest does, trailing slash included.
    assert_eq!(
        String::from_utf8(meta.clone()).expect("UTF-8"),
        format!(
            r#"{{"databricks_instance": "{}/", "run_id": "1000"}}"#,
            setup.fake.base_url()
        )
    );
    let resource = setup.get(&meta).await;
    assert_eq!(resource.phase(), Phase::Initializing);
    assert_eq!(
        resource.log_links[0].uri,
        format!("{}/#job/2000/run/1000", setup.fake.base_url())
    );

    // Without either, the task is refused before any request.
    let setup = Setup::allowed(component).await;
    let mut request = setup.create_request("nightly", TOKEN);
    request.template = Some(fake_databricks::task_template(
        "",
        fake_databricks::job_conf("nightly"),
    ));
    let status = setup
        .hosted
        .create(request)
        .await
        .expect_err("no workspace");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status
            .message()
            .contains("the task names no Databricks instance"),
        "{}",
        status.message()
    );
    assert_eq!(setup.fake.calls().total(), 0);
}

async fn hosts_the_manifest_does_not_allow_are_denied_before_any_request(component: Component) {
    for rules in [
        vec![],
        vec!["https://{fake}"],         // wrong scheme
        vec!["http://127.0.0.1:1"],     // wrong port
        vec!["*.cloud.databricks.com"], // another host
    ] {
        let setup = Setup::start(component, &rules).await;
        let host = format!("127.0.0.1:{}", setup.fake.addr().port());
        for _ in 0..2 {
            let status = setup.create("nightly").await.expect_err("denied");
            assert_eq!(
                status.code(),
                Code::Internal,
                "{rules:?}: {}",
                status.message()
            );
            assert!(
                status
                    .message()
                    .contains(&format!("outbound HTTP to {host} is denied")),
                "{rules:?}: {}",
                status.message()
            );
        }
        assert_eq!(
            setup.fake.calls().total(),
            0,
            "{rules:?}: the fake was reached"
        );
        let refusals = |output: &str| {
            output
                .lines()
                .filter(|l| l.contains("WARN") && l.contains("outbound HTTP refused"))
                .count()
        };
        let output = setup
            .server()
            .output
            .once("the refusal", |text| refusals(text) > 0)
            .await;
        let warnings = refusals(&output);
        assert_eq!(warnings, 1, "{rules:?}: logged once per host:\n{output}");
        let labels = [
            ("connector", component.name),
            ("host", &format!("http://{host}")),
            ("reason", "rule"),
        ];
        assert_eq!(
            metric_value(
                &setup.server().metrics_text(),
                "flyte_connector_outbound_denied_total",
                &labels
            ),
            Some(2.0),
            "{rules:?}"
        );
    }
}

async fn an_invalid_rule_keeps_the_plugin_out_with_a_warning_naming_it(component: Component) {
    let setup = Setup::start(component, &["https://{fake}/api"]).await;
    assert!(setup.server().connector_names().await.is_empty());
    let output = setup.server().output.text();
    assert!(
        output.lines().any(|l| l.contains("WARN")
            && l.contains(&format!("{}.wasm", component.file))
            && l.contains("/api\" is invalid")),
        "{output}"
    );
}

/// The Python build's own manifest serves it under task type
/// `databricks_py`, beside the Rust build, which owns `databricks`.
#[tokio::test]
async fn the_python_builds_manifest_serves_it_as_databricks_py() {
    let manifest = include_str!("../../example-connectors/databricks-py/databricks-py.toml");
    let hosted = HostedConnector::start(PYTHON.file, "databricks_py", manifest);
    let listed = hosted
        .server
        .metadata()
        .await
        .list_connectors(ListConnectorsRequest {})
        .await
        .expect("ListConnectors")
        .into_inner();
    let summary: Vec<(String, Vec<(String, i32)>)> = listed
        .connectors
        .into_iter()
        .map(|c| {
            let categories = c
                .supported_task_categories
                .into_iter()
                .map(|t| (t.name, t.version))
                .collect();
            (c.name, categories)
        })
        .collect();
    assert_eq!(
        summary,
        [(
            PYTHON.name.to_owned(),
            vec![("databricks_py".to_owned(), 0)]
        )]
    );
}

/// What one build answered to [`answers`]' calls, with the fake's address
/// written `{fake}`, and the run specs it submitted.
#[derive(Debug, PartialEq)]
struct Answers {
    answers: Vec<String>,
    submitted: Vec<Value>,
}

/// The answers of `component` to calls that succeed and calls that fail in
/// every way the connector itself words.
async fn answers(component: Component) -> Answers {
    let setup = Setup::allowed(component).await;
    let status = |status: tonic::Status| format!("{:?}: {}", status.code(), status.message());
    let resource = |resource: Resource| {
        format!(
            "{:?}: {} {:?}",
            resource.phase(),
            resource.message,
            resource.log_links
        )
    };
    let mut answers = Vec::new();
    for run_name in ["throttled", "broken"] {
        answers.push(status(setup.create(run_name).await.expect_err(run_name)));
    }
    let mut request = setup.create_request("nightly", "dapi-wrong");
    answers.push(status(
        setup.hosted.create(request).await.expect_err("token"),
    ));
    request = setup.create_request("nightly", TOKEN);
    request.connection = None;
    answers.push(status(
        setup.hosted.create(request).await.expect_err("none"),
    ));
    for conf in [
        Value::Null,
        json!({"run_name": "r"}),
        json!({"new_cluster": 1}),
    ] {
        request = setup.create_request("nightly", TOKEN);
        request.template = Some(setup.template(conf));
        answers.push(status(
            setup.hosted.create(request).await.expect_err("conf"),
        ));
    }
    request = setup.create_request("nightly", TOKEN);
    request.template = Some(fake_databricks::task_template(
        "myorg.cloud.databricks.com",
        fake_databricks::job_conf("nightly"),
    ));
    answers.push(status(
        setup.hosted.create(request).await.expect_err("host"),
    ));

    // Accepted runs, one on an existing cluster with numbers of every kind,
    // one on a new cluster whose settings the template completes or keeps.
    request = setup.create_request("nightly", TOKEN);
    request.template = Some(setup.template(json!({
        "run_name": "existing",
        "existing_cluster_id": "c-1",
        "timeout_seconds": 60,
        "max_retries": 1.5,
        "tags": {"n": [1, -2, 2.5, 1e300]},
    })));
    setup.hosted.create(request).await.expect("existing");
    request = setup.create_request("nightly", TOKEN);
    request.template = Some(setup.template(json!({
        "run_name": "kept",
        "new_cluster": {
            "docker_image": {"url": "mine"},
            "spark_conf": {"a": "b"},
            "spark_env_vars": {"FLYTE_INTERNAL_EXECUTION_ID": "mine", "B": "2"},
            "num_workers": 0,
        },
    })));
    setup.hosted.create(request).await.expect("kept");
    let meta = setup.create("nightly").await.expect("nightly");
    answers.push(String::from_utf8(meta.clone()).expect("UTF-8"));
    answers.push(resource(setup.get(&meta).await));
    let no_token = connection(&[]);
    answers.push(status(
        setup
            .hosted
            .try_get(&meta, &no_token)
            .await
            .expect_err("get"),
    ));
    answers.push(status(
        setup
            .hosted
            .delete(&meta, &no_token)
            .await
            .expect_err("delete"),
    ));
    let flaky = setup.create("flaky-poll").await.expect("flaky");
    answers.push(resource(setup.get(&flaky).await));
    answers.push(resource(setup.get(&flaky).await));
    let unknown = format!(
        r#"{{"databricks_instance": "{}", "run_id": "999"}}"#,
        setup.fake.base_url()
    );
    let unknown = unknown.as_bytes();
    let with_token = connection(&[(SECRET, TOKEN)]);
    answers.push(status(
        setup
            .hosted
            .try_get(unknown, &with_token)
            .await
            .expect_err("get"),
    ));
    answers.push(status(setup.delete(unknown).await.expect_err("delete")));

    let fake = setup.fake.addr().to_string();
    Answers {
        answers: answers
            .into_iter()
            .map(|answer| answer.replace(&fake, "{fake}"))
            .collect(),
        submitted: setup.fake.submitted(),
    }
}

/// Both builds answer every call alike, down to the messages and the
/// specs they submit.
#[tokio::test]
async fn the_python_build_answers_as_the_rust_one() {
    let (rust, python) = tokio::join!(answers(RUST), answers(PYTHON));
    assert_eq!(rust.submitted.len(), 6, "{:#?}", rust.submitted);
    for (rust, python) in rust.answers.iter().zip(&python.answers) {
        assert_eq!(rust, python);
    }
    assert_eq!(rust, python);
}
