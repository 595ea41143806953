//! A fake Google on 127.0.0.1: the BigQuery API v2 job endpoints the
//! BigQuery connector calls, with the real API's shapes, and the GCE
//! metadata server's access-token endpoint.
//!
//! - `POST /bigquery/v2/projects/{project}/jobs` with a Job → the job,
//!   `status.state` PENDING
//! - `GET /bigquery/v2/projects/{project}/jobs/{job_id}?location=L` → the
//!   job, its `status` one step further along its script at each call
//! - `POST /bigquery/v2/projects/{project}/jobs/{job_id}/cancel?location=L`
//!   → `{"kind": "bigquery#jobCancelResponse", "job": {...}}`
//! - `GET /computeMetadata/v1/instance/service-accounts/default/token` with
//!   `Metadata-Flavor: Google` → `{"access_token", "expires_in", "token_type"}`
//!   (point a client's `GCE_METADATA_HOST` at [`FakeBigQuery::addr`])
//! - `GET /__fake/calls` → [`Calls`]; `GET /__fake/submitted` → the insert
//!   bodies with their user agents, `[{"body", "user_agent"}]`
//!
//! Every BigQuery request must carry `Authorization: Bearer X` (else 401,
//! as Google answers), where X is a token the metadata endpoint issued or a
//! self-signed JWT of the [`ServiceAccount`]: RS256 with its key, header
//! `kid` its `private_key_id`, `iss` and `sub` its `client_email`, `aud`
//! [`AUDIENCE`], `iat`/`exp` valid and at most an hour apart. A job's
//! script is picked by its query text:
//!
//! | query contains | states, one per `jobs.get` |
//! | --- | --- |
//! | anything else | PENDING, RUNNING, DONE (with a `destinationTable`) |
//! | `SELEC ` | PENDING, DONE with `errorResult` `invalidQuery` |
//! | `-- slow` | PENDING, then RUNNING forever |
//! | `-- throttled` | the insert answers 429 `rateLimitExceeded` |
//! | `-- broken` | the insert answers 503 `backendError` |
//!
//! A job stays on its last step once there. A job cancelled before it
//! finished is DONE with `errorResult` `stopped` from then on; cancelling a
//! finished job answers 200 and leaves it as it was.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use rsa::RsaPublicKey;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    fake_http::{self, FakeService, Ledger, Serving, now_ms},
    jwt,
};

/// The `aud` of a self-signed service-account JWT for BigQuery.
pub const AUDIENCE: &str = "https://bigquery.googleapis.com/";
/// The longest lifetime (`exp` − `iat`) of an accepted JWT, in seconds.
pub const MAX_LIFETIME_SECS: u64 = 3600;
/// The test service account's e-mail ([`ServiceAccount::test_account`]).
pub const CLIENT_EMAIL: &str = "flyte-connect@flyte-tests.iam.gserviceaccount.com";
/// The test service account's key id ([`ServiceAccount::test_account`]).
pub const PRIVATE_KEY_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
/// The dataset of the anonymous result tables of finished queries.
pub const RESULT_DATASET: &str = "_0a1b2c3d4e";
/// The location of a job inserted without one.
pub const DEFAULT_LOCATION: &str = "US";

const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.";

/// The service account whose self-signed JWTs the fake accepts.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    /// `client_email` of the key file: the tokens' `iss` and `sub`.
    pub client_email: String,
    /// `private_key_id` of the key file: the tokens' header `kid`.
    pub private_key_id: String,
    /// The public half of the key file's `private_key`.
    pub public_key: RsaPublicKey,
}

impl ServiceAccount {
    /// [`CLIENT_EMAIL`] and [`PRIVATE_KEY_ID`] with the test key
    /// (`service.pem`, see [`jwt`]).
    pub fn test_account() -> Self {
        Self {
            client_email: CLIENT_EMAIL.into(),
            private_key_id: PRIVATE_KEY_ID.into(),
            public_key: jwt::fixture_public_key(jwt::SERVICE_PUBLIC_KEY),
        }
    }

    /// The key file of the test account ([`service_account_json`] with
    /// `service.pem`), with `token_uri` as given.
    pub fn test_key_file(token_uri: &str) -> String {
        service_account_json(
            &jwt::fixture(jwt::SERVICE_KEY),
            CLIENT_EMAIL,
            PRIVATE_KEY_ID,
            token_uri,
        )
    }
}

/// A Google service-account key file (JSON) for the key
/// `private_key_pem` (PKCS#8 PEM), as the Cloud console downloads it: what a
/// task's connection secret holds. The project is the one in
/// `client_email` (`NAME@PROJECT.iam.gserviceaccount.com`).
pub fn service_account_json(
    private_key_pem: &str,
    client_email: &str,
    private_key_id: &str,
    token_uri: &str,
) -> String {
    let project_id = client_email
        .split_once('@')
        .and_then(|(_, domain)| domain.split_once('.'))
        .map_or("flyte-tests", |(project, _)| project);
    let key = json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": private_key_id,
        "private_key": private_key_pem,
        "client_email": client_email,
        "client_id": "104235361934208751632",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": format!(
            "https://www.googleapis.com/robot/v1/metadata/x509/{}",
            client_email.replace('@', "%40")
        ),
        "universe_domain": "googleapis.com",
    });
    serde_json::to_string_pretty(&key).expect("a key file serializes")
}

/// How a request authorized itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BearerKind {
    /// A JWT signed with the service account's key.
    SelfSignedJwt,
    /// An access token the fake's metadata endpoint issued.
    MetadataToken,
}

/// Requests the fake has received, by endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Calls {
    /// `jobs.insert`.
    pub insert: usize,
    /// `jobs.get`.
    pub get: usize,
    /// `jobs.cancel`.
    pub cancel: usize,
    /// Access tokens the metadata endpoint issued.
    pub metadata_token: usize,
    /// Requests refused for missing or wrong credentials (a BigQuery
    /// request without a valid bearer, a metadata request without
    /// `Metadata-Flavor: Google`).
    pub unauthorized: usize,
}

impl Calls {
    /// All requests.
    pub fn total(&self) -> usize {
        self.insert + self.get + self.cancel + self.metadata_token + self.unauthorized
    }
}

/// One step of a job's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Pending,
    Running,
    Done,
    Failed,
}

const SUCCESS: &[Step] = &[Step::Pending, Step::Running, Step::Done];
const INVALID_QUERY: &[Step] = &[Step::Pending, Step::Failed];
const SLOW: &[Step] = &[Step::Pending, Step::Running];

struct Job {
    location: String,
    configuration: Value,
    script: &'static [Step],
    /// `jobs.get` calls answered so far.
    polls: usize,
    cancelled: bool,
    created_ms: u128,
}

impl Job {
    /// A job of `script` in `location`, not polled yet.
    fn new(location: String, configuration: Value, script: &'static [Step]) -> Self {
        Self {
            location,
            configuration,
            script,
            polls: 0,
            cancelled: false,
            created_ms: now_ms(),
        }
    }

    /// The step the last answer showed (PENDING before any `jobs.get`).
    fn shown(&self) -> Step {
        self.script[self.polls.saturating_sub(1).min(self.script.len() - 1)]
    }

    /// The step a `jobs.get` shows, one further along the script.
    fn poll(&mut self) -> Step {
        if self.cancelled {
            Step::Done
        } else {
            fake_http::advance(self.script, &mut self.polls)
        }
    }

    /// The step a `jobs.cancel` shows: the job cancelled, unless it was
    /// shown finished already.
    fn cancel(&mut self) -> Step {
        if self.cancelled {
            return Step::Done;
        }
        match self.shown() {
            // Shown as finished already: a cancel changes nothing.
            finished @ (Step::Done | Step::Failed) if self.polls > 0 => finished,
            _ => {
                self.cancelled = true;
                Step::Done
            }
        }
    }
}

#[derive(Default)]
struct Google {
    /// By project, then job id.
    jobs: BTreeMap<(String, String), Job>,
    bearers: Vec<BearerKind>,
    /// The self-signed JWTs accepted, each once.
    jwts: BTreeSet<String>,
    issued: BTreeSet<String>,
}

/// The fake Google as its handlers share it: the service account it
/// accepts, where it serves, its jobs and tokens, and what it received.
#[derive(Clone)]
pub struct Fake {
    account: Arc<ServiceAccount>,
    base_url: Arc<str>,
    google: Arc<Mutex<Google>>,
    ledger: Ledger<Calls>,
}

/// A Google API error: `{"error": {"code", "message", "errors", "status"}}`.
fn error(status: StatusCode, reason: &str, message: &str) -> Response {
    let status_name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    (
        status,
        Json(json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status_name,
        }})),
    )
        .into_response()
}

fn not_found(project: &str, location: &str, job_id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "notFound",
        &format!("Not found: Job {project}:{location}.{job_id}"),
    )
}

/// The job a `jobs.get` or `jobs.cancel` names: `{project}` and `{job_id}`
/// of its path, and its query (`location`).
type JobPath = (Path<(String, String)>, Query<BTreeMap<String, String>>);

impl Fake {
    fn google(&self) -> MutexGuard<'_, Google> {
        fake_http::lock(&self.google)
    }

    /// Why the self-signed JWT `token` is not the service account's.
    fn check_jwt(&self, token: &str) -> Result<(), String> {
        let (header, claims) = jwt::verify_rs256(token, &self.account.public_key)?;
        if header.get("kid").and_then(Value::as_str) != Some(&self.account.private_key_id) {
            return Err("kid is not the key's id".into());
        }
        let email = Some(self.account.client_email.as_str());
        if claims.get("iss").and_then(Value::as_str) != email {
            return Err("iss is not the service account".into());
        }
        if claims.get("sub").and_then(Value::as_str) != email {
            return Err("sub is not the service account".into());
        }
        if claims.get("aud").and_then(Value::as_str) != Some(AUDIENCE) {
            return Err("aud is not BigQuery".into());
        }
        jwt::check_times(&claims, MAX_LIFETIME_SECS)
    }

    /// The job resource as `jobs.get` shows it at `step`.
    fn resource(&self, project: &str, job_id: &str, job: &Job, step: Step) -> Value {
        let mut configuration = job.configuration.clone();
        let mut statistics = json!({"creationTime": job.created_ms.to_string()});
        if step != Step::Pending {
            statistics["startTime"] = json!((job.created_ms + 50).to_string());
        }
        let status = match step {
            Step::Pending => json!({"state": "PENDING"}),
            Step::Running => json!({"state": "RUNNING"}),
            Step::Done if job.cancelled => {
                let stopped = json!({
                    "reason": "stopped",
                    "message": "Job execution was cancelled: User requested cancellation",
                });
                json!({"state": "DONE", "errorResult": stopped, "errors": [stopped]})
            }
            Step::Done => {
                if let Some(query) = configuration.get_mut("query").filter(|q| q.is_object()) {
                    query["destinationTable"] = json!({
                        "projectId": project,
                        "datasetId": RESULT_DATASET,
                        "tableId": format!("anon_{}", job_id.replace('-', "")),
                    });
                }
                statistics["query"] = json!({"totalBytesProcessed": "1024"});
                statistics["totalBytesProcessed"] = json!("1024");
                json!({"state": "DONE"})
            }
            Step::Failed => {
                let invalid = json!({
                    "reason": "invalidQuery",
                    "location": "query",
                    "message": "Syntax error: Unexpected identifier \"SELEC\" at [1:1]",
                });
                json!({"state": "DONE", "errorResult": invalid, "errors": [invalid]})
            }
        };
        if matches!(step, Step::Done | Step::Failed) {
            statistics["endTime"] = json!((job.created_ms + 100).to_string());
        }
        json!({
            "kind": "bigquery#job",
            "etag": format!("\"{}-{}\"", job_id, job.polls),
            "id": format!("{project}:{}.{job_id}", job.location),
            "selfLink": format!(
                "{}/bigquery/v2/projects/{project}/jobs/{job_id}?location={}",
                self.base_url, job.location
            ),
            "user_email": self.account.client_email,
            "jobReference": {"projectId": project, "jobId": job_id, "location": job.location},
            "configuration": configuration,
            "status": status,
            "statistics": statistics,
        })
    }
}

impl FakeService for Fake {
    type Calls = Calls;

    fn ledger(&self) -> &Ledger<Calls> {
        &self.ledger
    }

    /// Checks the bearer; the error is the answer Google gives.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let kind = match token {
            Some(token) if self.google().issued.contains(token) => Some(BearerKind::MetadataToken),
            Some(token) if token.contains('.') => self
                .check_jwt(token)
                .ok()
                .map(|()| BearerKind::SelfSignedJwt),
            _ => None,
        };
        match kind {
            Some(kind) => {
                let mut google = self.google();
                google.bearers.push(kind);
                if let (BearerKind::SelfSignedJwt, Some(token)) = (kind, token) {
                    google.jwts.insert(token.to_owned());
                }
                Ok(())
            }
            None => {
                self.ledger.count(|calls| &mut calls.unauthorized);
                Err(Box::new(error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    UNAUTHENTICATED,
                )))
            }
        }
    }
}

/// A running fake Google; it stops when dropped. Its
/// [`addr`](Serving::addr) is what `GCE_METADATA_HOST` names, its
/// [`base_url`](Serving::base_url) the root of the BigQuery API.
pub type FakeBigQuery = Serving<Fake>;

impl FakeBigQuery {
    /// Serves on a free loopback port, accepting `service_account`'s JWTs
    /// and the tokens it issues itself.
    pub async fn start(service_account: ServiceAccount) -> Self {
        let routes = Router::new()
            .route("/bigquery/v2/projects/{project}/jobs", post(insert))
            .route(
                "/bigquery/v2/projects/{project}/jobs/{job_id}",
                get(get_job),
            )
            .route(
                "/bigquery/v2/projects/{project}/jobs/{job_id}/cancel",
                post(cancel),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(metadata_token),
            );
        Self::serve("BigQuery", routes, |addr| Fake {
            account: Arc::new(service_account),
            base_url: Arc::from(format!("http://{addr}")),
            google: Arc::default(),
            ledger: Ledger::default(),
        })
        .await
    }

    /// The bodies of the inserts received, in order.
    pub fn jobs(&self) -> Vec<Value> {
        self.fake().ledger.bodies()
    }

    /// How each authorized BigQuery request authorized itself, in order.
    pub fn bearers(&self) -> Vec<BearerKind> {
        self.fake().google().bearers.clone()
    }

    /// How many different self-signed JWTs were accepted.
    pub fn distinct_jwts(&self) -> usize {
        self.fake().google().jwts.len()
    }

    /// Whether a job `job_id` (of any project) was cancelled.
    pub fn cancelled(&self, job_id: &str) -> bool {
        self.fake()
            .google()
            .jobs
            .iter()
            .any(|((_, id), job)| id == job_id && job.cancelled)
    }

    /// Registers job `job_id` of `project` in `location` as if inserted
    /// earlier (by another server), with the default script.
    pub fn add_job(&self, project: &str, location: &str, job_id: &str) {
        self.fake().google().jobs.insert(
            (project.to_owned(), job_id.to_owned()),
            Job::new(
                location.to_owned(),
                json!({"query": {"query": "SELECT 1", "useLegacySql": false}}),
                SUCCESS,
            ),
        );
    }
}

async fn insert(
    State(fake): State<Fake>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = fake.admit(&headers, |calls| &mut calls.insert) {
        return *denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Invalid JSON payload received.",
        );
    };
    fake.ledger.record(body.clone(), &headers);
    let reference = &body["jobReference"];
    let Some(job_id) = reference["jobId"].as_str().filter(|id| !id.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Required parameter is missing: jobReference.jobId",
        );
    };
    let Some(query) = body["configuration"]["query"]["query"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Required parameter is missing: configuration.query.query",
        );
    };
    if reference["projectId"].as_str() != Some(project.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "jobReference.projectId does not match the project of the request",
        );
    }
    let location = reference["location"]
        .as_str()
        .filter(|l| !l.is_empty())
        .unwrap_or(DEFAULT_LOCATION)
        .to_owned();
    let script = if query.contains("-- throttled") {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rateLimitExceeded",
            "Exceeded rate limits: too many api requests per user per method for this user_method.",
        );
    } else if query.contains("-- broken") {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backendError",
            "Error encountered during execution. Retrying may solve the problem.",
        );
    } else if query.contains("SELEC ") {
        INVALID_QUERY
    } else if query.contains("-- slow") {
        SLOW
    } else {
        SUCCESS
    };
    let mut google = fake.google();
    let key = (project.clone(), job_id.to_owned());
    if let Some(existing) = google.jobs.get(&key) {
        return error(
            StatusCode::CONFLICT,
            "duplicate",
            &format!(
                "Already Exists: Job {project}:{}.{job_id}",
                existing.location
            ),
        );
    }
    let job = Job::new(location, body["configuration"].clone(), script);
    let resource = fake.resource(&project, job_id, &job, Step::Pending);
    google.jobs.insert(key, job);
    Json(resource).into_response()
}

/// Whether `wanted` (the `location` query parameter) names `location`.
fn location_matches(wanted: Option<&String>, location: &str) -> bool {
    wanted.is_none_or(|wanted| wanted.eq_ignore_ascii_case(location))
}

impl Fake {
    /// Answers for `jobs.get` and `jobs.cancel`: admits the request
    /// (counting it in the counter `counter` picks), finds the job `path`
    /// names (404 when it is not in the location the query names, if any),
    /// and gives the job resource at the step `step` moves it to.
    fn on_job(
        &self,
        headers: &HeaderMap,
        (Path((project, job_id)), Query(query)): JobPath,
        counter: impl FnOnce(&mut Calls) -> &mut usize,
        step: impl FnOnce(&mut Job) -> Step,
    ) -> Result<Value, Box<Response>> {
        self.admit(headers, counter)?;
        let mut google = self.google();
        let wanted = query.get("location");
        let Some(job) = google
            .jobs
            .get_mut(&(project.clone(), job_id.clone()))
            .filter(|job| location_matches(wanted, &job.location))
        else {
            let location = wanted.map_or(DEFAULT_LOCATION, String::as_str);
            return Err(Box::new(not_found(&project, location, &job_id)));
        };
        let step = step(job);
        Ok(self.resource(&project, &job_id, job, step))
    }
}

async fn get_job(State(fake): State<Fake>, path: JobPath, headers: HeaderMap) -> Response {
    match fake.on_job(&headers, path, |calls| &mut calls.get, Job::poll) {
        Ok(resource) => Json(resource).into_response(),
        Err(answer) => *answer,
    }
}

async fn cancel(State(fake): State<Fake>, path: JobPath, headers: HeaderMap) -> Response {
    match fake.on_job(&headers, path, |calls| &mut calls.cancel, Job::cancel) {
        Ok(resource) => Json(json!({
            "kind": "bigquery#jobCancelResponse",
            "job": resource,
        }))
        .into_response(),
        Err(answer) => *answer,
    }
}

async fn metadata_token(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    let flavor = headers.get("metadata-flavor").and_then(|v| v.to_str().ok());
    if flavor != Some("Google") {
        fake.ledger.count(|calls| &mut calls.unauthorized);
        return (
            StatusCode::FORBIDDEN,
            [("metadata-flavor", "Google")],
            "Missing required header: Metadata-Flavor\n",
        )
            .into_response();
    }
    let issued = fake.ledger.count(|calls| &mut calls.metadata_token);
    let token = format!("ya29.fake-{issued}");
    fake.google().issued.insert(token.clone());
    (
        [("metadata-flavor", "Google")],
        Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        fake_http::client::{agent, reply, served},
        jwt::{OTHER_KEY, SERVICE_KEY, fixture, now_secs, sign_rs256},
    };

    fn token(key: &str, aud: &str) -> String {
        let now = now_secs();
        sign_rs256(
            &json!({"typ": "JWT", "kid": PRIVATE_KEY_ID}),
            &json!({"iss": CLIENT_EMAIL, "sub": CLIENT_EMAIL, "aud": aud, "iat": now, "exp": now + 3600}),
            &fixture(key),
        )
    }

    fn job(job_id: &str, query: &str) -> String {
        json!({
            "jobReference": {"projectId": "p1", "jobId": job_id, "location": "EU"},
            "configuration": {"query": {
                "query": query,
                "useLegacySql": false,
                "parameterMode": "NAMED",
                "queryParameters": [{
                    "name": "n",
                    "parameterType": {"type": "INT64"},
                    "parameterValue": {"value": "42"},
                }],
            }},
        })
        .to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_runs_to_done_is_cancelled_and_tokens_are_checked() {
        let fake = FakeBigQuery::start(ServiceAccount::test_account()).await;
        let agent = agent();
        let jobs = format!("{}/bigquery/v2/projects/p1/jobs", fake.base_url());
        let good = format!("Bearer {}", token(SERVICE_KEY, AUDIENCE));
        let insert = |bearer: &str, job_id: &str, query: &str| {
            reply(
                agent
                    .post(&jobs)
                    .header("authorization", bearer)
                    .send(job(job_id, query)),
            )
        };
        let get =
            |url: &str, bearer: &str| reply(agent.get(url).header("authorization", bearer).call());

        // Refused: no bearer, the wrong key, the wrong audience.
        for bearer in [
            String::new(),
            format!("Bearer {}", token(OTHER_KEY, AUDIENCE)),
            format!("Bearer {}", token(SERVICE_KEY, "https://example.com/")),
        ] {
            let (status, body) = insert(&bearer, "j0", "SELECT 1");
            assert_eq!(status, 401);
            assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
            assert!(
                !body.to_string().contains("eyJ"),
                "the answer echoes a token"
            );
        }
        assert_eq!(fake.calls().unauthorized, 3);
        assert!(fake.jobs().is_empty());

        // Inserted, then PENDING, RUNNING, DONE.
        let (status, body) = reply(
            agent
                .post(&jobs)
                .header("authorization", &good)
                .header("user-agent", "flyte-connect-test/1")
                .send(job("job-1", "SELECT @n")),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], "p1:EU.job-1");
        assert_eq!(body["status"]["state"], "PENDING");
        assert_eq!(body["configuration"]["query"]["query"], "SELECT @n");
        assert_eq!(fake.user_agents(), ["flyte-connect-test/1"]);
        let url = format!("{jobs}/job-1?location=eu");
        let states: Vec<Value> = (0..4).map(|_| get(&url, &good).1).collect();
        let names: Vec<&str> = states
            .iter()
            .map(|s| s["status"]["state"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(names, ["PENDING", "RUNNING", "DONE", "DONE"]);
        assert_eq!(
            states[2]["configuration"]["query"]["destinationTable"]["tableId"],
            "anon_job1"
        );
        // Another location, or a second insert of the same id.
        let (status, _) = get(&format!("{jobs}/job-1?location=US"), &good);
        assert_eq!(status, 404);
        let (status, body) = insert(&good, "job-1", "SELECT 1");
        assert_eq!(status, 409);
        assert_eq!(body["error"]["errors"][0]["reason"], "duplicate");

        // A failing query and a throttled one.
        insert(&good, "bad", "SELEC 1");
        let url = format!("{jobs}/bad?location=EU");
        get(&url, &good);
        let (_, failed) = get(&url, &good);
        assert_eq!(failed["status"]["errorResult"]["reason"], "invalidQuery");
        let (status, _) = insert(&good, "t", "SELECT 1 -- throttled");
        assert_eq!(status, 429);

        // A slow job, cancelled with a metadata token.
        let (status, metadata) = reply(
            agent
                .get(format!(
                    "{}/computeMetadata/v1/instance/service-accounts/default/token",
                    fake.base_url()
                ))
                .header("metadata-flavor", "Google")
                .call(),
        );
        assert_eq!(status, 200);
        let access = format!(
            "Bearer {}",
            metadata["access_token"].as_str().expect("a token")
        );
        let (status, _) = reply(
            agent
                .get(format!(
                    "{}/computeMetadata/v1/instance/service-accounts/default/token",
                    fake.base_url()
                ))
                .call(),
        );
        assert_eq!(status, 403);
        insert(&access, "slow-1", "SELECT 1 -- slow");
        let (status, body) = reply(
            agent
                .post(format!("{jobs}/slow-1/cancel?location=EU"))
                .header("authorization", &access)
                .send_empty(),
        );
        assert_eq!(status, 200);
        assert_eq!(body["kind"], "bigquery#jobCancelResponse");
        assert!(fake.cancelled("slow-1"));
        let (_, stopped) = get(&format!("{jobs}/slow-1"), &access);
        assert_eq!(stopped["status"]["state"], "DONE");
        assert_eq!(stopped["status"]["errorResult"]["reason"], "stopped");
        assert_eq!(
            fake.bearers().last(),
            Some(&BearerKind::MetadataToken),
            "{:?}",
            fake.bearers()
        );

        // A job inserted elsewhere; the counters as the fake serves them.
        fake.add_job("p2", "US", "elsewhere");
        let elsewhere = format!("{}/bigquery/v2/projects/p2/jobs/elsewhere", fake.base_url());
        let (status, body) = get(&elsewhere, &good);
        assert_eq!((status, &body["status"]["state"]), (200, &json!("PENDING")));
        let calls = fake.calls();
        assert_eq!(
            calls,
            Calls {
                insert: 5,
                get: 9,
                cancel: 1,
                metadata_token: 1,
                unauthorized: 4,
            }
        );
        let (served, submitted) = served(&fake.base_url());
        assert_eq!(served["insert"], 5);
        assert_eq!(submitted[0]["user_agent"], "flyte-connect-test/1");
        assert_eq!(submitted[0]["body"]["jobReference"]["jobId"], "job-1");
    }

    #[test]
    fn the_key_file_names_the_project_of_the_account() {
        let file: Value =
            serde_json::from_str(&ServiceAccount::test_key_file("http://127.0.0.1:1/token"))
                .expect("JSON");
        assert_eq!(file["type"], "service_account");
        assert_eq!(file["project_id"], "flyte-tests");
        assert_eq!(file["token_uri"], "http://127.0.0.1:1/token");
        assert!(
            file["private_key"]
                .as_str()
                .is_some_and(|k| k.contains("BEGIN PRIVATE KEY"))
        );
    }
}
