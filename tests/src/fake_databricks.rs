//! A fake Databricks workspace on 127.0.0.1: the three Jobs API 2.1
//! endpoints the Databricks connector calls, with the real API's shapes.
//!
//! - `POST /api/2.1/jobs/runs/submit` → `{"run_id": N}`
//! - `GET /api/2.1/jobs/runs/get?run_id=N` → the run, its `state` one step
//!   further along its script at each call
//! - `POST /api/2.1/jobs/runs/cancel` with `{"run_id": N}` → `{}`
//! - `GET /__fake/calls` → [`Calls`]; `GET /__fake/submitted` → the submitted
//!   bodies with their user agents, `[{"body", "user_agent"}]`
//!
//! Every request must carry `Authorization: Bearer TOKEN` (else 403, as
//! Databricks answers). A run's script is picked by its `run_name`:
//!
//! | `run_name` | states, one per poll |
//! | --- | --- |
//! | anything else | PENDING, RUNNING, TERMINATED/SUCCESS |
//! | `fails` | PENDING, TERMINATED/FAILED |
//! | `internal-error` | PENDING, INTERNAL_ERROR |
//! | `queued` | QUEUED, BLOCKED, WAITING_FOR_RETRY, RUNNING, TERMINATED/SUCCESS |
//! | `flaky-poll` | the first poll answers 503, then as the default |
//! | `throttled-polls` | the first two polls answer 429 with `Retry-After: 1`, then as the default |
//! | `unavailable` | every poll answers 503 |
//! | `throttled` | the submit answers 429 |
//! | `throttled-once` | the first submit answers 429, then as the default |
//! | `broken` | the submit answers 500 |
//!
//! A cancelled run is TERMINATED/CANCELED from then on. A submit whose
//! `idempotency_token` an earlier submit carried answers that submit's run
//! id and starts nothing, as Databricks does.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use flyte_connect::proto::core::{Container, KeyValuePair, TaskTemplate, task_template::Target};
use serde::Serialize;
use serde_json::{Value, json};

use crate::fake_http::{self, FakeService, Ledger, Serving};

/// The container image of [`task_template`].
pub const IMAGE: &str = "ghcr.io/flyteorg/databricks-task:v1";

/// A `databricksConf` for a run named `run_name` (which picks its script)
/// on a new cluster.
pub fn job_conf(run_name: &str) -> Value {
    json!({
        "run_name": run_name,
        "new_cluster": {"spark_version": "13.3.x-scala2.12", "num_workers": 1},
        "timeout_seconds": 3600,
    })
}

/// A template as `flyteplugins-databricks` makes it, for workspace
/// `instance` and job configuration `databricks_conf`.
pub fn task_template(instance: &str, databricks_conf: Value) -> TaskTemplate {
    let custom = json!({
        "sparkConf": {"spark.driver.memory": "1000M"},
        "mainApplicationFile": "local:///usr/local/bin/entrypoint.py",
        "executorPath": "/usr/bin/python3",
        "applicationType": "PYTHON",
        "databricksConf": databricks_conf,
        "databricksInstance": instance,
        "secrets": {"databricks_token": "databricks-token"},
    });
    TaskTemplate {
        r#type: "databricks".into(),
        custom: serde_json::from_value(custom).ok(),
        target: Some(Target::Container(Container {
            image: IMAGE.into(),
            args: vec![
                "a0".into(),
                "--inputs".into(),
                "s3://bucket/inputs.pb".into(),
            ],
            env: vec![KeyValuePair {
                key: "FLYTE_INTERNAL_EXECUTION_ID".into(),
                value: "exec-1".into(),
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// One step of a run's script: life cycle state, result state, message.
type Step = (&'static str, Option<&'static str>, &'static str);

const SUCCESS: &[Step] = &[
    ("PENDING", None, "Waiting for cluster"),
    ("RUNNING", None, "In run"),
    ("TERMINATED", Some("SUCCESS"), ""),
];
const FAILS: &[Step] = &[
    ("PENDING", None, "Waiting for cluster"),
    (
        "TERMINATED",
        Some("FAILED"),
        "Task failed with error: ZeroDivisionError",
    ),
];
const INTERNAL_ERROR: &[Step] = &[
    ("PENDING", None, "Waiting for cluster"),
    ("INTERNAL_ERROR", None, "Cluster failed to start"),
];
const QUEUED: &[Step] = &[
    ("QUEUED", None, "Queued: max concurrent runs reached"),
    ("BLOCKED", None, "Blocked on an upstream run"),
    ("WAITING_FOR_RETRY", None, "Retrying"),
    ("RUNNING", None, "In run"),
    ("TERMINATED", Some("SUCCESS"), ""),
];
const CANCELED: Step = ("TERMINATED", Some("CANCELED"), "Run cancelled by the user");

/// Requests the fake has received, by endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Calls {
    /// `runs/submit`.
    pub submit: usize,
    /// `runs/get`.
    pub get: usize,
    /// `runs/cancel`.
    pub cancel: usize,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: usize,
}

impl Calls {
    /// All requests.
    pub fn total(&self) -> usize {
        self.submit + self.get + self.cancel + self.unauthorized
    }
}

struct Run {
    job_id: u64,
    script: &'static [Step],
    polls: usize,
    cancelled: bool,
    /// Polls still to fail, and how they fail.
    failing_polls: usize,
    failure: PollFailure,
}

impl Run {
    /// Run `run_id` of `script`, not polled yet, the first `failing_polls`
    /// polls failing as `failure` says.
    fn new(
        run_id: u64,
        script: &'static [Step],
        (failing_polls, failure): (usize, PollFailure),
    ) -> Self {
        Self {
            job_id: run_id + 1000,
            script,
            polls: 0,
            cancelled: false,
            failing_polls,
            failure,
        }
    }
}

/// How a failing poll fails.
#[derive(Clone, Copy)]
enum PollFailure {
    /// 503, as a workspace under maintenance answers.
    Unavailable,
    /// 429 with `Retry-After: 1`, as the rate limit answers.
    Throttled,
}

/// The fake workspace as its handlers share it: the token it accepts, its
/// runs, and what it received.
#[derive(Clone)]
pub struct Fake {
    token: Arc<str>,
    runs: Arc<Mutex<BTreeMap<u64, Run>>>,
    /// The run each `idempotency_token` started, and the `throttled-once`
    /// submits already refused.
    submits: Arc<Mutex<Submits>>,
    ledger: Ledger<Calls>,
}

#[derive(Default)]
struct Submits {
    by_token: BTreeMap<String, u64>,
    throttled_once: usize,
}

impl Fake {
    fn runs(&self) -> MutexGuard<'_, BTreeMap<u64, Run>> {
        fake_http::lock(&self.runs)
    }
}

impl FakeService for Fake {
    type Calls = Calls;

    fn ledger(&self) -> &Ledger<Calls> {
        &self.ledger
    }

    /// Checks the bearer token; the error is the answer Databricks gives.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let expected = format!("Bearer {}", self.token);
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given == Some(expected.as_str()) {
            return Ok(());
        }
        self.ledger.count(|calls| &mut calls.unauthorized);
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Invalid access token.",
        )))
    }
}

/// A running fake workspace; it stops when dropped.
pub type FakeDatabricks = Serving<Fake>;

impl FakeDatabricks {
    /// Serves on a free loopback port, accepting `token` only. Its
    /// [`base_url`](Serving::base_url) is what a template's
    /// `databricksInstance` names.
    pub async fn start(token: &str) -> Self {
        let routes = Router::new()
            .route("/api/2.1/jobs/runs/submit", post(submit))
            .route("/api/2.1/jobs/runs/get", get(get_run))
            .route("/api/2.1/jobs/runs/cancel", post(cancel));
        let fake = Fake {
            token: Arc::from(token),
            runs: Arc::default(),
            submits: Arc::default(),
            ledger: Ledger::default(),
        };
        Self::serve("Databricks", routes, |_| fake).await
    }

    /// The bodies of the runs submitted, in order.
    pub fn submitted(&self) -> Vec<Value> {
        self.fake().ledger.bodies()
    }

    /// The `traceparent` each submit carried, in order.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.fake()
            .ledger
            .submitted()
            .into_iter()
            .map(|submitted| submitted.traceparent)
            .collect()
    }

    /// Whether run `run_id` was cancelled.
    pub fn cancelled(&self, run_id: u64) -> bool {
        self.fake()
            .runs()
            .get(&run_id)
            .is_some_and(|run| run.cancelled)
    }

    /// Registers run `run_id` as if submitted earlier (by another server).
    pub fn add_run(&self, run_id: u64) {
        self.fake().runs().insert(
            run_id,
            Run::new(run_id, SUCCESS, (0, PollFailure::Unavailable)),
        );
    }
}

fn run_id_of(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        // The Python connector sends the run id as a string; Databricks takes both.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error_code": code, "message": message})),
    )
        .into_response()
}

/// The 400 Databricks gives for a missing or unknown run id.
fn invalid_parameter(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
}

async fn submit(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(denied) = fake.admit(&headers, |calls| &mut calls.submit) {
        return *denied;
    }
    let run_name = body["run_name"].as_str().unwrap_or_default().to_owned();
    let idempotency_token = body["idempotency_token"].as_str().map(str::to_owned);
    fake.ledger.record(body, &headers);
    let mut submits = fake_http::lock(&fake.submits);
    if let Some(run_id) = idempotency_token
        .as_ref()
        .and_then(|token| submits.by_token.get(token))
    {
        return Json(json!({ "run_id": run_id })).into_response();
    }
    let throttle = |submits: &mut Submits| {
        submits.throttled_once += 1;
        submits.throttled_once == 1
    };
    let script = match run_name.as_str() {
        "throttled-once" if throttle(&mut submits) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "REQUEST_LIMIT_EXCEEDED",
                "Too many requests",
            );
        }
        "throttled" => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "REQUEST_LIMIT_EXCEEDED",
                "Too many requests",
            );
        }
        "broken" => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "Internal error",
            );
        }
        "fails" => FAILS,
        "internal-error" => INTERNAL_ERROR,
        "queued" => QUEUED,
        _ => SUCCESS,
    };
    let mut runs = fake.runs();
    let run_id = 1000 + runs.len() as u64;
    let failing = match run_name.as_str() {
        "flaky-poll" => (1, PollFailure::Unavailable),
        "throttled-polls" => (2, PollFailure::Throttled),
        "unavailable" => (usize::MAX, PollFailure::Unavailable),
        _ => (0, PollFailure::Unavailable),
    };
    runs.insert(run_id, Run::new(run_id, script, failing));
    if let Some(token) = idempotency_token {
        submits.by_token.insert(token, run_id);
    }
    Json(json!({ "run_id": run_id })).into_response()
}

async fn get_run(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(denied) = fake.admit(&headers, |calls| &mut calls.get) {
        return *denied;
    }
    let Some(run_id) = query.get("run_id").and_then(|id| id.parse::<u64>().ok()) else {
        return invalid_parameter("run_id is required");
    };
    let mut runs = fake.runs();
    let Some(run) = runs.get_mut(&run_id) else {
        return invalid_parameter("Run does not exist");
    };
    if run.failing_polls > 0 {
        run.failing_polls -= 1;
        return match run.failure {
            PollFailure::Unavailable => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARILY_UNAVAILABLE",
                "Try again later",
            ),
            PollFailure::Throttled => {
                let mut answer = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "REQUEST_LIMIT_EXCEEDED",
                    "Too many requests",
                );
                answer
                    .headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("1"));
                answer
            }
        };
    }
    let (life_cycle, result, message) = if run.cancelled {
        CANCELED
    } else {
        fake_http::advance(run.script, &mut run.polls)
    };
    let mut state = json!({"life_cycle_state": life_cycle, "state_message": message});
    if let Some(result) = result {
        state["result_state"] = json!(result);
    }
    Json(json!({
        "job_id": run.job_id,
        "run_id": run_id,
        "run_name": "flyte",
        "state": state,
    }))
    .into_response()
}

async fn cancel(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(denied) = fake.admit(&headers, |calls| &mut calls.cancel) {
        return *denied;
    }
    let mut runs = fake.runs();
    let Some(run) = run_id_of(&body["run_id"]).and_then(|id| runs.get_mut(&id)) else {
        return invalid_parameter("Run does not exist");
    };
    run.cancelled = true;
    Json(json!({})).into_response()
}
