//! The Databricks connector end to end: the real binary, `databricks.wasm`,
//! and a fake Databricks workspace on loopback — submit, poll every kind of
//! run, cancel, the Python connector's metas, a refused token, retryable
//! failures, and the outbound-HTTP policy. The token never reaches the log.

use flyte_connect::proto::{
    connector::{CreateTaskRequest, Resource},
    core::{TaskTemplate, task_execution::Phase, task_log::LinkType},
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

struct Setup {
    fake: FakeDatabricks,
    hosted: HostedConnector,
}

impl Setup {
    /// The connector, with a manifest of `allowed_hosts` (`{fake}` stands
    /// for the fake's `127.0.0.1:PORT`), and the fake workspace.
    async fn start(allowed_hosts: &[&str]) -> Self {
        let fake = FakeDatabricks::start(TOKEN).await;
        let rules: Vec<String> = allowed_hosts
            .iter()
            .map(|rule| format!("{:?}", rule.replace("{fake}", &fake.addr().to_string())))
            .collect();
        let manifest = format!("allowed_hosts = [{}]\n", rules.join(", "));
        let hosted = HostedConnector::start("databricks", "databricks", &manifest);
        Self { fake, hosted }
    }

    async fn allowed() -> Self {
        Self::start(&["http://{fake}"]).await
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

#[tokio::test]
async fn a_run_is_submitted_then_polled_to_success() {
    let setup = Setup::allowed().await;
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
        ("connector", "Databricks Connector"),
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

#[tokio::test]
async fn failed_queued_and_internal_error_runs_map_to_their_phases() {
    let setup = Setup::allowed().await;
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

#[tokio::test]
async fn delete_cancels_the_run_and_is_idempotent() {
    let setup = Setup::allowed().await;
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

#[tokio::test]
async fn a_meta_written_by_the_python_connector_is_polled_and_cancelled() {
    let setup = Setup::allowed().await;
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

#[tokio::test]
async fn a_refused_token_names_the_workspace_never_the_token() {
    let setup = Setup::allowed().await;
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

#[tokio::test]
async fn transient_failures_are_retryable() {
    let setup = Setup::allowed().await;
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
    // A poll answered 503: the task reports RETRYABLE_FAILED, so Flyte retries it.
    let meta = setup.create("flaky-poll").await.expect("create");
    let resource = setup.get(&meta).await;
    assert_eq!(resource.phase(), Phase::RetryableFailed);
    assert!(resource.message.contains("503"), "{}", resource.message);
}

#[tokio::test]
async fn a_template_the_connector_cannot_run_is_invalid_argument() {
    let setup = Setup::allowed().await;
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

#[tokio::test]
async fn hosts_the_manifest_does_not_allow_are_denied_before_any_request() {
    for rules in [
        vec![],
        vec!["https://{fake}"],         // wrong scheme
        vec!["http://127.0.0.1:1"],     // wrong port
        vec!["*.cloud.databricks.com"], // another host
    ] {
        let setup = Setup::start(&rules).await;
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
        let output = setup.server().output.text();
        let warnings = output
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("outbound HTTP denied"))
            .count();
        assert_eq!(warnings, 1, "{rules:?}: logged once per host:\n{output}");
        let labels = [
            ("connector", "Databricks Connector"),
            ("host", &format!("http://{host}")),
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

#[tokio::test]
async fn an_invalid_rule_keeps_the_plugin_out_with_a_warning_naming_it() {
    let setup = Setup::start(&["https://{fake}/api"]).await;
    assert!(setup.server().connector_names().await.is_empty());
    let output = setup.server().output.text();
    assert!(
        output.lines().any(|l| l.contains("WARN")
            && l.contains("databricks.wasm")
            && l.contains("/api\" is invalid")),
        "{output}"
    );
}
