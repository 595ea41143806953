//! The BigQuery connector end to end: the real binary, `bigquery.wasm`, and
//! a fake Google (BigQuery jobs API and metadata server) on loopback that
//! verifies every self-signed JWT against the test key's public half.
//! Typed query parameters, the Python connector's metas, every job outcome,
//! cancel, workload identity, a refused key, retryable failures — and the
//! key never in the log.

use flyte_connect::proto::{
    connector::CreateTaskRequest,
    core::{Connection, SimpleType, literal, scalar, task_execution::Phase, task_log::LinkType},
};
use flyte_connect_e2e::{
    fake_bigquery::{
        BearerKind, CLIENT_EMAIL, FakeBigQuery, RESULT_DATASET, ServiceAccount,
        service_account_json,
    },
    hosted::{HostedConnector, connection},
    jwt,
    literals::{self, TypedInputs, dataframe_type, simple, sql_task_request},
};
use serde_json::{Value, json};
use tonic::Code;

const TASK_TYPE: &str = "bigquery_query_job_task";
const PROJECT: &str = "flyte-proj";
const SECRET: &str = "google_application_credentials";

struct Setup {
    fake: FakeBigQuery,
    hosted: HostedConnector,
    key_file: String,
}

impl Setup {
    /// The connector pointed at the fake by its manifest: endpoint and
    /// metadata host in `[env]`, the fake allowed.
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// [`Self::start`], with `top` as the manifest's first lines.
    async fn start_with(top: &str) -> Self {
        let fake = FakeBigQuery::start(ServiceAccount::test_account()).await;
        let manifest = format!(
            "{top}allowed_hosts = [\"{base}\"]\n\n[env]\nBIGQUERY_ENDPOINT = \"{base}\"\n\
             GCE_METADATA_HOST = \"{addr}\"\n",
            base = fake.base_url(),
            addr = fake.addr(),
        );
        let hosted = HostedConnector::start("bigquery", TASK_TYPE, &manifest);
        Self {
            fake,
            hosted,
            key_file: ServiceAccount::test_key_file("https://oauth2.googleapis.com/token"),
        }
    }

    fn connection(&self) -> Connection {
        connection(&[(SECRET, &self.key_file)])
    }

    /// A task as `BigQueryTask` makes it, with `inputs` and a `results`
    /// DataFrame output.
    fn request(&self, statement: &str, inputs: &TypedInputs) -> CreateTaskRequest {
        let custom = json!({"Location": "US", "ProjectID": PROJECT, "Domain": "development"});
        CreateTaskRequest {
            connection: Some(self.connection()),
            ..sql_task_request(
                TASK_TYPE,
                statement,
                custom,
                inputs,
                &[("results", dataframe_type())],
            )
        }
    }

    async fn create(&self, statement: &str) -> Result<Vec<u8>, tonic::Status> {
        self.hosted
            .create(self.request(statement, &TypedInputs(vec![])))
            .await
    }
}

fn meta_json(meta: &[u8]) -> Value {
    serde_json::from_slice(meta).expect("a JSON meta")
}

#[tokio::test]
async fn a_query_job_runs_to_success_with_typed_parameters_and_the_python_meta() {
    let setup = Setup::start().await;
    let inputs = TypedInputs(vec![
        ("n", literals::int(42), simple(SimpleType::Integer)),
        ("ratio", literals::float(0.25), simple(SimpleType::Float)),
        (
            "name",
            literals::string("o'hara"),
            simple(SimpleType::String),
        ),
        (
            "active",
            literals::boolean(true),
            simple(SimpleType::Boolean),
        ),
        (
            "since",
            literals::datetime(1_700_000_000, 123_456_789),
            simple(SimpleType::Datetime),
        ),
    ]);
    let statement = "SELECT * FROM t WHERE n = @n AND name = @name";
    let meta = setup
        .hosted
        .create(setup.request(statement, &inputs))
        .await
        .expect("CreateTask");

    // The Python connector's meta, byte for byte, around the generated id.
    let job_id = meta_json(&meta)["job_id"]
        .as_str()
        .expect("job_id")
        .to_owned();
    assert_eq!(
        String::from_utf8(meta.clone()).expect("UTF-8"),
        format!(
            r#"{{"job_id": "{job_id}", "project": "{PROJECT}", "location": "US", "user_agent": "Flyte/2.12.1 (GPN:Union;development)"}}"#
        )
    );
    let job = &setup.fake.jobs()[0];
    assert_eq!(
        job["jobReference"],
        json!({"projectId": PROJECT, "jobId": job_id, "location": "US"})
    );
    let query = &job["configuration"]["query"];
    assert_eq!(query["query"], statement);
    assert_eq!(query["useLegacySql"], false);
    assert_eq!(query["parameterMode"], "NAMED");
    let parameters: Vec<(String, String, Value)> = query["queryParameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["parameterType"]["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["parameterValue"]["value"].clone(),
            )
        })
        .collect();
    let expected: Vec<(String, String, Value)> = [
        ("active", "BOOL", json!("true")),
        ("n", "INT64", json!("42")),
        ("name", "STRING", json!("o'hara")),
        ("ratio", "FLOAT64", json!("0.25")),
        ("since", "DATETIME", json!("2023-11-14T22:13:20.123456")),
    ]
    .into_iter()
    .map(|(n, t, v)| (n.to_owned(), t.to_owned(), v))
    .collect();
    assert_eq!(parameters, expected);
    assert_eq!(
        setup.fake.user_agents(),
        ["Flyte/2.12.1 (GPN:Union;development)"]
    );

    let connection = setup.connection();
    let first = setup.hosted.get(&meta, &connection).await;
    assert_eq!(first.phase(), Phase::Initializing);
    assert_eq!(first.message, "PENDING");
    assert_eq!(first.log_links[0].name, "BigQuery Console");
    assert_eq!(first.log_links[0].link_type(), LinkType::Dashboard);
    assert_eq!(
        first.log_links[0].uri,
        format!(
            "https://console.cloud.google.com/bigquery?project={PROJECT}&j=bq:US:{job_id}&page=queryresults"
        )
    );
    assert_eq!(
        setup.hosted.get(&meta, &connection).await.phase(),
        Phase::Running
    );
    let done = setup.hosted.get(&meta, &connection).await;
    assert_eq!(done.phase(), Phase::Succeeded);
    let outputs = done.outputs.expect("outputs");
    let results = outputs
        .literals
        .iter()
        .find(|named| named.name == "results")
        .and_then(|named| named.value.clone())
        .expect("a results output");
    let Some(literal::Value::Scalar(scalar)) = results.value else {
        panic!("results is not a scalar: {results:?}")
    };
    let Some(scalar::Value::StructuredDataset(dataset)) = scalar.value else {
        panic!("results is not a DataFrame: {scalar:?}")
    };
    assert_eq!(
        dataset.uri,
        format!(
            "bq://{PROJECT}:{RESULT_DATASET}.anon_{}",
            job_id.replace('-', "")
        )
    );

    // Every request carried a fresh self-signed JWT the fake verified.
    let calls = setup.fake.calls();
    assert_eq!((calls.insert, calls.get, calls.unauthorized), (1, 3, 0));
    assert!(
        setup
            .fake
            .bearers()
            .iter()
            .all(|kind| *kind == BearerKind::SelfSignedJwt)
    );
    setup
        .hosted
        .assert_key_never_logged(&jwt::fixture(jwt::SERVICE_KEY));
}

#[tokio::test]
async fn with_instance_reuse_the_jwt_is_signed_once_per_token_lifetime() {
    let setup = Setup::start_with("instance_reuse = \"connection\"\n").await;
    let meta = setup.create("SELECT 1").await.expect("create");
    for _ in 0..3 {
        setup.hosted.get(&meta, &setup.connection()).await;
        // A token signed in a later second differs from the first one.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    assert_eq!(setup.fake.calls().unauthorized, 0);
    assert!(
        setup.fake.bearers().len() >= 4,
        "{:?}",
        setup.fake.bearers()
    );
    assert_eq!(setup.fake.distinct_jwts(), 1, "one token for all the calls");
}

#[tokio::test]
async fn a_failed_query_fails_with_bigquerys_error_and_cancel_is_idempotent() {
    let setup = Setup::start().await;
    let connection = setup.connection();
    let failing = setup.create("SELEC 1").await.expect("create");
    assert_eq!(
        setup.hosted.phases(&failing, &connection, 2).await,
        [Phase::Initializing, Phase::Failed]
    );
    let failed = setup.hosted.get(&failing, &connection).await;
    assert!(
        failed.message.contains("invalidQuery") && failed.message.contains("Syntax error"),
        "{}",
        failed.message
    );

    let slow = setup.create("SELECT 1 -- slow").await.expect("create");
    let job_id = meta_json(&slow)["job_id"].as_str().expect("id").to_owned();
    setup
        .hosted
        .delete(&slow, &connection)
        .await
        .expect("DeleteTask");
    assert!(setup.fake.cancelled(&job_id));
    let cancelled = setup.hosted.get(&slow, &connection).await;
    assert_eq!(cancelled.phase(), Phase::Failed);
    assert!(
        cancelled.message.contains("cancelled"),
        "{}",
        cancelled.message
    );
    setup
        .hosted
        .delete(&slow, &connection)
        .await
        .expect("a second DeleteTask");
    // A job BigQuery no longer knows: nothing to cancel.
    let unknown = format!(
        r#"{{"job_id": "gone", "project": "{PROJECT}", "location": "US", "user_agent": "x"}}"#
    );
    setup
        .hosted
        .delete(unknown.as_bytes(), &connection)
        .await
        .expect("DeleteTask of an unknown job");
    assert_eq!(setup.fake.calls().cancel, 3);
}

#[tokio::test]
async fn a_meta_written_by_the_python_connector_is_polled() {
    let setup = Setup::start().await;
    setup.fake.add_job(PROJECT, "EU", "python-job-1");
    // What flyteplugins-bigquery's connector stored: json.dumps(asdict(meta)).
    let meta = format!(
        r#"{{"job_id": "python-job-1", "project": "{PROJECT}", "location": "EU", "user_agent": "Flyte/2.12.1 (GPN:Union;production)"}}"#
    );
    assert_eq!(
        setup
            .hosted
            .phases(meta.as_bytes(), &setup.connection(), 3)
            .await,
        [Phase::Initializing, Phase::Running, Phase::Succeeded]
    );
}

#[tokio::test]
async fn without_a_key_the_metadata_servers_token_is_used() {
    let setup = Setup::start().await;
    let mut request = setup.request("SELECT 1", &TypedInputs(vec![]));
    request.connection = None;
    let meta = setup.hosted.create(request).await.expect("CreateTask");
    let none = Connection::default();
    assert_eq!(
        setup.hosted.get(&meta, &none).await.phase(),
        Phase::Initializing
    );
    assert_eq!(setup.fake.calls().metadata_token, 2);
    assert_eq!(
        setup.fake.bearers(),
        [BearerKind::MetadataToken, BearerKind::MetadataToken]
    );
}

#[tokio::test]
async fn a_key_google_does_not_know_is_refused_naming_the_project_and_account() {
    let setup = Setup::start().await;
    let other_pem = jwt::fixture("other.pem");
    let wrong_key = service_account_json(
        &other_pem,
        CLIENT_EMAIL,
        flyte_connect_e2e::fake_bigquery::PRIVATE_KEY_ID,
        "https://oauth2.googleapis.com/token",
    );
    let mut request = setup.request("SELECT 1", &TypedInputs(vec![]));
    request.connection = Some(connection(&[(SECRET, &wrong_key)]));
    let status = setup.hosted.create(request).await.expect_err("refused");
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    let message = status.message();
    assert!(
        message.contains("refused the credentials")
            && message.contains(CLIENT_EMAIL)
            && message.contains(PROJECT),
        "{message}"
    );
    let key_line = other_pem.lines().nth(5).expect("a PEM line");
    assert!(!message.contains(key_line), "{message}");
    assert!(!setup.hosted.server.output.text().contains(key_line));
    assert_eq!(setup.fake.calls().unauthorized, 1);

    // A secret that is not a service-account key at all.
    let mut request = setup.request("SELECT 1", &TypedInputs(vec![]));
    request.connection = Some(connection(&[(SECRET, "{\"type\": \"authorized_user\"}")]));
    let status = setup.hosted.create(request).await.expect_err("not a key");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains(SECRET), "{}", status.message());
}

#[tokio::test]
async fn transient_failures_are_retryable() {
    let setup = Setup::start().await;
    for statement in ["SELECT 1 -- throttled", "SELECT 1 -- broken"] {
        let status = setup.create(statement).await.expect_err(statement);
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        assert!(
            status
                .message()
                .starts_with(&format!("failed to create {TASK_TYPE} task with error:\n")),
            "{}",
            status.message()
        );
    }
}

#[tokio::test]
async fn inputs_bigquery_cannot_take_are_invalid_argument_naming_them() {
    let setup = Setup::start().await;
    let inputs = TypedInputs(vec![(
        "ids",
        literals::list(vec![literals::int(1)]),
        literals::list_of(simple(SimpleType::Integer)),
    )]);
    let status = setup
        .hosted
        .create(setup.request("SELECT @ids", &inputs))
        .await
        .expect_err("a list");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("`ids`"), "{}", status.message());

    let mut request = setup.request("SELECT 1", &TypedInputs(vec![]));
    if let Some(template) = request.template.as_mut() {
        template.custom = serde_json::from_value(json!({"Location": "US"})).ok();
    }
    let status = setup.hosted.create(request).await.expect_err("no project");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("ProjectID"),
        "{}",
        status.message()
    );
    assert_eq!(setup.fake.calls().total(), 0);
}
