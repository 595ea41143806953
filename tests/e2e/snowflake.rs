//! The Snowflake connector end to end: the real binary, `snowflake.wasm`,
//! and a fake Snowflake SQL API v2 on loopback that verifies every
//! key-pair JWT against the test key's public half. Typed bind variables,
//! batches, the Python connector's metas, every statement outcome, cancel,
//! an encrypted key, a refused key, retryable failures — and the key never
//! in the log.

use flyte_connect::proto::{
    connector::CreateTaskRequest,
    core::{Connection, SimpleType, literal, scalar, task_execution::Phase, task_log::LinkType},
};
use flyte_connect_e2e::{
    fake_snowflake::FakeSnowflake,
    hosted::{HostedConnector, connection},
    jwt,
    literals::{self, TypedInputs, dataframe_type, list_of, simple, sql_task_request},
};
use serde_json::{Value, json};
use tonic::Code;

const USER: &str = "flyte_loader";
const KEY_SECRET: &str = "snowflake_private_key";
const PASSPHRASE_SECRET: &str = "snowflake_private_key_passphrase";

struct Setup {
    fake: FakeSnowflake,
    hosted: HostedConnector,
    account: String,
}

impl Setup {
    /// The connector pointed at a fake account `account` by its manifest.
    async fn start(account: &str) -> Self {
        let fake = FakeSnowflake::start(
            account,
            USER,
            jwt::fixture_public_key(jwt::SERVICE_PUBLIC_KEY),
        )
        .await;
        let manifest = format!(
            "allowed_hosts = [\"{base}\"]\n\n[env]\nSNOWFLAKE_ENDPOINT = \"{base}\"\n",
            base = fake.base_url(),
        );
        let hosted = HostedConnector::start("snowflake", "snowflake", &manifest);
        Self {
            fake,
            hosted,
            account: account.to_owned(),
        }
    }

    fn connection(&self) -> Connection {
        connection(&[(KEY_SECRET, &jwt::fixture(jwt::SERVICE_KEY))])
    }

    /// The `custom` the `Snowflake` task writes.
    fn custom(&self) -> Value {
        json!({
            "account": self.account,
            "user": USER,
            "database": "ANALYTICS",
            "schema": "PUBLIC",
            "warehouse": "COMPUTE_WH",
            "connection_kwargs": {"role": "LOADER"},
            "secrets": {"snowflake_private_key": "SNOWFLAKE_PRIVATE_KEY"},
        })
    }

    fn request(
        &self,
        statement: &str,
        inputs: &TypedInputs,
        with_output: bool,
    ) -> CreateTaskRequest {
        let outputs = if with_output {
            vec![("results", dataframe_type())]
        } else {
            vec![]
        };
        CreateTaskRequest {
            connection: Some(self.connection()),
            ..sql_task_request("snowflake", statement, self.custom(), inputs, &outputs)
        }
    }

    async fn create(&self, statement: &str) -> Result<Vec<u8>, tonic::Status> {
        self.hosted
            .create(self.request(statement, &TypedInputs(vec![]), true))
            .await
    }
}

fn query_id(meta: &[u8]) -> String {
    let meta: Value = serde_json::from_slice(meta).expect("a JSON meta");
    meta["query_id"].as_str().expect("query_id").to_owned()
}

#[tokio::test]
async fn a_statement_runs_to_success_with_typed_bindings_and_the_python_meta() {
    let setup = Setup::start("myorg-analytics").await;
    let inputs = TypedInputs(vec![
        ("id", literals::int(7), simple(SimpleType::Integer)),
        (
            "name",
            literals::string("o'hara"),
            simple(SimpleType::String),
        ),
        ("score", literals::float(0.5), simple(SimpleType::Float)),
        (
            "active",
            literals::boolean(false),
            simple(SimpleType::Boolean),
        ),
        (
            "since",
            literals::datetime(1_700_000_000, 500_000_000),
            simple(SimpleType::Datetime),
        ),
    ]);
    let statement = "SELECT * FROM users WHERE id = %(id)s AND name = %(name)s AND score > \
                     %(score)s AND active = %(active)s AND seen > %(since)s AND tag LIKE 'a%%'";
    let meta = setup
        .hosted
        .create(setup.request(statement, &inputs, true))
        .await
        .expect("CreateTask");
    let handle = query_id(&meta);
    assert_eq!(
        String::from_utf8(meta.clone()).expect("UTF-8"),
        format!(
            r#"{{"account": "myorg-analytics", "user": "{USER}", "database": "ANALYTICS", "schema": "PUBLIC", "warehouse": "COMPUTE_WH", "query_id": "{handle}", "has_output": true, "connection_kwargs": {{"role": "LOADER"}}}}"#
        )
    );
    let submitted = &setup.fake.statements()[0];
    assert_eq!(
        submitted["statement"],
        "SELECT * FROM users WHERE id = ? AND name = ? AND score > ? AND active = ? AND seen > ? \
         AND tag LIKE 'a%'"
    );
    assert_eq!(
        submitted["bindings"],
        json!({
            "1": {"type": "FIXED", "value": "7"},
            "2": {"type": "TEXT", "value": "o'hara"},
            "3": {"type": "REAL", "value": "0.5"},
            "4": {"type": "BOOLEAN", "value": "false"},
            "5": {"type": "TIMESTAMP_NTZ", "value": "2023-11-14T22:13:20.500000000"},
        })
    );
    for (field, value) in [
        ("database", "ANALYTICS"),
        ("schema", "PUBLIC"),
        ("warehouse", "COMPUTE_WH"),
        ("role", "LOADER"),
    ] {
        assert_eq!(submitted[field], value, "{field}");
    }
    assert!(setup.fake.user_agents()[0].starts_with("flyte-connect-snowflake/"));

    let connection = setup.connection();
    let running = setup.hosted.get(&meta, &connection).await;
    assert_eq!(running.phase(), Phase::Running);
    assert_eq!(running.log_links[0].name, "Snowflake Dashboard");
    assert_eq!(running.log_links[0].link_type(), LinkType::Dashboard);
    assert_eq!(
        running.log_links[0].uri,
        format!(
            "https://app.snowflake.com/myorg/analytics/#/compute/history/queries/{handle}/detail"
        )
    );
    let done = setup.hosted.get(&meta, &connection).await;
    assert_eq!(done.phase(), Phase::Succeeded);
    let results = done
        .outputs
        .expect("outputs")
        .literals
        .into_iter()
        .find(|named| named.name == "results")
        .and_then(|named| named.value)
        .expect("a results output");
    let Some(literal::Value::Scalar(scalar)) = results.value else {
        panic!("results is not a scalar")
    };
    let Some(scalar::Value::StructuredDataset(dataset)) = scalar.value else {
        panic!("results is not a DataFrame: {scalar:?}")
    };
    assert_eq!(
        dataset.uri,
        format!("snowflake://{USER}/myorg-analytics/COMPUTE_WH/ANALYTICS/PUBLIC/{handle}")
    );
    let calls = setup.fake.calls();
    assert_eq!((calls.submit, calls.status, calls.unauthorized), (1, 2, 0));
    setup
        .hosted
        .assert_key_never_logged(&jwt::fixture(jwt::SERVICE_KEY));
}

#[tokio::test]
async fn an_encrypted_key_signs_for_a_locator_account_and_batches_expand() {
    // A locator with region and cloud: the JWT names XY12345 alone.
    let setup = Setup::start("xy12345.us-east-2.aws").await;
    let encrypted = connection(&[
        (KEY_SECRET, &jwt::fixture(jwt::SERVICE_ENCRYPTED_KEY)),
        (PASSPHRASE_SECRET, jwt::SERVICE_KEY_PASSPHRASE),
    ]);
    let inputs = TypedInputs(vec![
        (
            "ids",
            literals::list(vec![literals::int(1), literals::int(2)]),
            list_of(simple(SimpleType::Integer)),
        ),
        (
            "names",
            literals::list(vec![literals::string("a"), literals::string("b")]),
            list_of(simple(SimpleType::String)),
        ),
    ]);
    let mut request = setup.request(
        "INSERT INTO people (id, name) VALUES (%(ids)s, %(names)s)",
        &inputs,
        false,
    );
    if let Some(template) = request.template.as_mut() {
        let mut custom = setup.custom();
        custom["batch"] = json!(true);
        template.custom = serde_json::from_value(custom).ok();
    }
    request.connection = Some(encrypted.clone());
    let meta = setup.hosted.create(request).await.expect("CreateTask");
    let submitted = &setup.fake.statements()[0];
    assert_eq!(
        submitted["statement"],
        "INSERT INTO people (id, name) VALUES (?, ?), (?, ?)"
    );
    let values: Vec<&Value> = submitted["bindings"]
        .as_object()
        .expect("bindings")
        .values()
        .map(|binding| &binding["value"])
        .collect();
    assert_eq!(values, ["1", "a", "2", "b"]);
    assert!(
        setup
            .fake
            .issuer()
            .starts_with("XY12345.FLYTE_LOADER.SHA256:")
    );

    // No outputs declared: success without outputs.
    assert_eq!(
        setup.hosted.phases(&meta, &encrypted, 2).await,
        [Phase::Running, Phase::Succeeded]
    );
    assert!(setup.hosted.get(&meta, &encrypted).await.outputs.is_none());
    assert_eq!(setup.fake.calls().unauthorized, 0);
    setup
        .hosted
        .assert_never_logged(&[jwt::SERVICE_KEY_PASSPHRASE]);
}

#[tokio::test]
async fn a_failed_statement_fails_with_snowflakes_error_and_cancel_is_idempotent() {
    let setup = Setup::start("myorg-analytics").await;
    let connection = setup.connection();
    let failing = setup
        .create("SELECT * FROM MISSING_TABLE")
        .await
        .expect("create");
    assert_eq!(
        setup.hosted.phases(&failing, &connection, 2).await,
        [Phase::Running, Phase::Failed]
    );
    let failed = setup.hosted.get(&failing, &connection).await;
    assert!(
        failed.message.contains("002003")
            && failed.message.contains("02000")
            && failed.message.contains("does not exist"),
        "{}",
        failed.message
    );

    let slow = setup.create("SELECT 1 -- slow").await.expect("create");
    setup
        .hosted
        .delete(&slow, &connection)
        .await
        .expect("DeleteTask");
    assert!(setup.fake.cancelled(&query_id(&slow)));
    let cancelled = setup.hosted.get(&slow, &connection).await;
    assert_eq!(cancelled.phase(), Phase::Failed);
    assert!(
        cancelled.message.contains("canceled"),
        "{}",
        cancelled.message
    );
    setup
        .hosted
        .delete(&slow, &connection)
        .await
        .expect("a second DeleteTask");
    assert_eq!(setup.fake.calls().cancel, 2);
}

#[tokio::test]
async fn a_meta_written_by_the_python_connector_is_polled() {
    let setup = Setup::start("myorg-analytics").await;
    let handle = "01b9a8c2-0000-4e5f-0000-00000000abcd";
    setup.fake.add_statement(handle);
    // What flyteplugins-snowflake's connector stored: json.dumps(asdict(meta)).
    let meta = format!(
        r#"{{"account": "myorg-analytics", "user": "{USER}", "database": "ANALYTICS", "schema": "PUBLIC", "warehouse": "COMPUTE_WH", "query_id": "{handle}", "has_output": false, "connection_kwargs": {{}}}}"#
    );
    assert_eq!(
        setup
            .hosted
            .phases(meta.as_bytes(), &setup.connection(), 2)
            .await,
        [Phase::Running, Phase::Succeeded]
    );
}

#[tokio::test]
async fn a_wrong_key_is_refused_naming_the_account_and_user() {
    let setup = Setup::start("myorg-analytics").await;
    let other = jwt::fixture(jwt::OTHER_KEY);
    let mut request = setup.request("SELECT 1", &TypedInputs(vec![]), true);
    request.connection = Some(connection(&[(KEY_SECRET, &other)]));
    let status = setup.hosted.create(request).await.expect_err("refused");
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    let message = status.message();
    assert!(
        message.contains("refused the key-pair JWT")
            && message.contains("myorg-analytics")
            && message.contains(USER)
            && message.contains(KEY_SECRET),
        "{message}"
    );
    let key_line = other.lines().nth(5).expect("a PEM line");
    assert!(!message.contains(key_line), "{message}");
    assert!(!setup.hosted.server.output.text().contains(key_line));
    assert_eq!(setup.fake.calls().unauthorized, 1);

    // A wrong passphrase is caught before any request.
    let mut request = setup.request("SELECT 1", &TypedInputs(vec![]), true);
    request.connection = Some(connection(&[
        (KEY_SECRET, &jwt::fixture(jwt::SERVICE_ENCRYPTED_KEY)),
        (PASSPHRASE_SECRET, "not-the-passphrase"),
    ]));
    let status = setup
        .hosted
        .create(request)
        .await
        .expect_err("wrong passphrase");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("passphrase"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("not-the-passphrase"));
    assert_eq!(setup.fake.calls().total(), 1);
}

#[tokio::test]
async fn transient_failures_are_retryable() {
    let setup = Setup::start("myorg-analytics").await;
    for statement in ["SELECT 1 -- throttled", "SELECT 1 -- broken"] {
        let status = setup.create(statement).await.expect_err(statement);
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    }
}

#[tokio::test]
async fn templates_the_connector_cannot_run_are_invalid_argument() {
    let setup = Setup::start("myorg-analytics").await;
    let mut request = setup.request("SELECT 1", &TypedInputs(vec![]), true);
    if let Some(template) = request.template.as_mut() {
        let mut custom = setup.custom();
        custom["warehouse"] = json!("");
        template.custom = serde_json::from_value(custom).ok();
    }
    let status = setup
        .hosted
        .create(request)
        .await
        .expect_err("no warehouse");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("User, database and warehouse must be specified"),
        "{}",
        status.message()
    );

    let inputs = TypedInputs(vec![("id", literals::int(1), simple(SimpleType::Integer))]);
    let status = setup
        .hosted
        .create(setup.request("SELECT %(missing)s", &inputs, true))
        .await
        .expect_err("no such input");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("%(missing)s"),
        "{}",
        status.message()
    );

    let mut request = setup.request("SELECT 1", &TypedInputs(vec![]), true);
    request.connection = None;
    let status = setup.hosted.create(request).await.expect_err("no key");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains(KEY_SECRET),
        "{}",
        status.message()
    );
    assert_eq!(setup.fake.calls().total(), 0);
}
