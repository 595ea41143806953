//! A fake Snowflake account on 127.0.0.1: the SQL API v2 endpoints the
//! Snowflake connector calls, with the real API's shapes.
//!
//! - `POST /api/v2/statements?async=true` with `{"statement", "bindings"?,
//!   ...}` → 202 `{"statementHandle", "statementStatusUrl", ...}`
//! - `GET /api/v2/statements/{handle}` → 202 while running, 200 with the
//!   result set when done, 422 when failed or cancelled: one step further
//!   along the statement's script at each call
//! - `POST /api/v2/statements/{handle}/cancel` → 200 `{"message":
//!   "Statement aborted.", ...}`
//! - `GET /__fake/calls` → [`Calls`]; `GET /__fake/submitted` → the submitted
//!   bodies with their user agents, `[{"body", "user_agent"}]`
//!
//! Every request must carry `X-Snowflake-Authorization-Token-Type:
//! KEYPAIR_JWT` and `Authorization: Bearer JWT`, a key-pair JWT as Snowflake
//! documents it: RS256 with the registered key, `iss`
//! `ACCOUNT.USER.SHA256:FINGERPRINT`, `sub` `ACCOUNT.USER`, `iat`/`exp` valid
//! and at most an hour apart (else 401 `390144`). ACCOUNT is the account
//! identifier before its first `.`, upper-cased; USER is upper-cased. A
//! statement's script is picked by its text:
//!
//! | statement contains | answers, one per status request |
//! | --- | --- |
//! | anything else | running (202), then success (200, one row `N` = 1) |
//! | `MISSING_TABLE` | running (202), then 422 `002003` (object does not exist) |
//! | `-- slow` | running (202) forever |
//! | `-- throttled` | the submit answers 429 |
//! | `-- broken` | the submit answers 503 (a plain-text body) |
//!
//! A statement stays on its last step once there. A statement cancelled
//! before it finished answers 422 `000604` (canceled) from then on;
//! cancelling a finished one answers 200 and leaves it as it was.

use std::{
    collections::BTreeMap,
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

/// The longest lifetime (`exp` − `iat`) of an accepted JWT, in seconds.
pub const MAX_LIFETIME_SECS: u64 = 3600;
/// The bind variable types the SQL API takes.
pub const BIND_TYPES: &[&str] = &[
    "FIXED",
    "REAL",
    "TEXT",
    "BOOLEAN",
    "TIMESTAMP_NTZ",
    "TIMESTAMP_LTZ",
    "TIMESTAMP_TZ",
    "DATE",
    "TIME",
    "BINARY",
];

const ASYNC_MESSAGE: &str = "Asynchronous execution in progress. Use provided query id to perform query monitoring and management.";

/// Requests the fake has received, by endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Calls {
    /// Statement submissions.
    pub submit: usize,
    /// Status requests.
    pub status: usize,
    /// Cancel requests.
    pub cancel: usize,
    /// Requests refused for a missing or invalid JWT.
    pub unauthorized: usize,
}

impl Calls {
    /// All requests.
    pub fn total(&self) -> usize {
        self.submit + self.status + self.cancel + self.unauthorized
    }
}

/// One step of a statement's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Running,
    Succeeded,
    Failed,
}

const SUCCESS: &[Step] = &[Step::Running, Step::Succeeded];
const MISSING_TABLE: &[Step] = &[Step::Running, Step::Failed];
const SLOW: &[Step] = &[Step::Running];

struct Statement {
    script: &'static [Step],
    /// Status requests answered so far.
    polls: usize,
    cancelled: bool,
    created_ms: u128,
}

impl Statement {
    /// A statement of `script`, not polled yet.
    fn new(script: &'static [Step]) -> Self {
        Self {
            script,
            polls: 0,
            cancelled: false,
            created_ms: now_ms(),
        }
    }

    /// Whether the last status answer showed the statement finished.
    fn finished(&self) -> bool {
        self.polls > 0 && self.script[(self.polls - 1).min(self.script.len() - 1)] != Step::Running
    }
}

#[derive(Default)]
struct Account {
    statements: BTreeMap<String, Statement>,
    next: u64,
}

/// The fake account as its handlers share it: the user and key whose JWTs
/// it accepts, its statements, and what it received.
#[derive(Clone)]
pub struct Fake {
    /// `ACCOUNT.USER.SHA256:FINGERPRINT`.
    issuer: Arc<str>,
    /// `ACCOUNT.USER`.
    subject: Arc<str>,
    public_key: Arc<RsaPublicKey>,
    account: Arc<Mutex<Account>>,
    ledger: Ledger<Calls>,
}

/// The account part of a JWT's claims: the identifier before its first
/// `.` (no region or cloud), upper-cased.
pub fn claims_account(account: &str) -> String {
    account.split('.').next().unwrap_or_default().to_uppercase()
}

fn status_url(handle: &str) -> String {
    format!("/api/v2/statements/{handle}")
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn not_found(handle: &str) -> Response {
    answer(
        StatusCode::NOT_FOUND,
        json!({"code": "000709", "message": format!("Statement {handle} not found")}),
    )
}

/// The number of `?` placeholders of `statement`, outside single-quoted
/// strings.
fn placeholders(statement: &str) -> usize {
    let mut quoted = false;
    let mut count = 0;
    for c in statement.chars() {
        match c {
            '\'' => quoted = !quoted,
            '?' if !quoted => count += 1,
            _ => {}
        }
    }
    count
}

/// Whether `bindings` sets each of the statement's `n` placeholders, and
/// only those, to a typed string value.
fn bindings_valid(bindings: Option<&Value>, n: usize) -> bool {
    let bindings = match bindings {
        None | Some(Value::Null) => return n == 0,
        Some(Value::Object(bindings)) => bindings,
        Some(_) => return false,
    };
    bindings.len() == n
        && (1..=n).all(|i| {
            bindings.get(&i.to_string()).is_some_and(|binding| {
                binding["type"]
                    .as_str()
                    .is_some_and(|t| BIND_TYPES.contains(&t))
                    && binding["value"].is_string()
            })
        })
}

impl Fake {
    fn account(&self) -> MutexGuard<'_, Account> {
        fake_http::lock(&self.account)
    }

    /// Why the request's JWT is not one of the registered key.
    fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if header("x-snowflake-authorization-token-type") != Some("KEYPAIR_JWT") {
            return Err("X-Snowflake-Authorization-Token-Type is not KEYPAIR_JWT".into());
        }
        let token = header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("no bearer token")?;
        let (_, claims) = jwt::verify_rs256(token.trim(), &self.public_key)?;
        if claims.get("iss").and_then(Value::as_str) != Some(&self.issuer) {
            return Err("iss is not ACCOUNT.USER.SHA256:FINGERPRINT of the key".into());
        }
        if claims.get("sub").and_then(Value::as_str) != Some(&self.subject) {
            return Err("sub is not ACCOUNT.USER".into());
        }
        jwt::check_times(&claims, MAX_LIFETIME_SECS)
    }

    /// Answers for a status request or a cancel: admits it (counting it in
    /// the counter `counter` picks), finds the statement `path` names (404
    /// when there is none), and answers with `answer` on it and its handle.
    fn on_statement(
        &self,
        headers: &HeaderMap,
        Path(handle): Path<String>,
        counter: impl FnOnce(&mut Calls) -> &mut usize,
        answer: impl FnOnce(&mut Statement, &str) -> Response,
    ) -> Response {
        if let Err(denied) = self.admit(headers, counter) {
            return *denied;
        }
        match self.account().statements.get_mut(&handle) {
            Some(statement) => answer(statement, &handle),
            None => not_found(&handle),
        }
    }
}

impl FakeService for Fake {
    type Calls = Calls;

    fn ledger(&self) -> &Ledger<Calls> {
        &self.ledger
    }

    /// Checks the JWT; the error is the answer Snowflake gives.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        self.check(headers).map_err(|reason| {
            self.ledger.count(|calls| &mut calls.unauthorized);
            Box::new(answer(
                StatusCode::UNAUTHORIZED,
                json!({"code": "390144", "message": format!("JWT token is invalid. [{reason}]")}),
            ))
        })
    }
}

/// A running fake Snowflake account; it stops when dropped. Its
/// [`base_url`](Serving::base_url) is the root of the SQL API.
pub type FakeSnowflake = Serving<Fake>;

impl FakeSnowflake {
    /// Serves on a free loopback port, accepting the JWTs of `user` of
    /// `account` (as a task names it: `myorg-analytics`,
    /// `xy12345.us-east-2.aws`) signed with the key of `public_key`.
    pub async fn start(account: &str, user: &str, public_key: RsaPublicKey) -> Self {
        let subject = format!("{}.{}", claims_account(account), user.to_uppercase());
        let fake = Fake {
            issuer: Arc::from(format!(
                "{subject}.SHA256:{}",
                jwt::public_key_fingerprint(&public_key)
            )),
            subject: Arc::from(subject),
            public_key: Arc::new(public_key),
            account: Arc::default(),
            ledger: Ledger::default(),
        };
        let routes = Router::new()
            .route("/api/v2/statements", post(submit))
            .route("/api/v2/statements/{handle}", get(status))
            .route("/api/v2/statements/{handle}/cancel", post(cancel));
        Self::serve("Snowflake", routes, |_| fake).await
    }

    /// The `iss` an accepted JWT carries: `ACCOUNT.USER.SHA256:FINGERPRINT`.
    pub fn issuer(&self) -> String {
        self.fake().issuer.to_string()
    }

    /// The `sub` an accepted JWT carries: `ACCOUNT.USER`.
    pub fn subject(&self) -> String {
        self.fake().subject.to_string()
    }

    /// The bodies of the statements submitted, in order.
    pub fn statements(&self) -> Vec<Value> {
        self.fake().ledger.bodies()
    }

    /// Whether statement `handle` was cancelled.
    pub fn cancelled(&self, handle: &str) -> bool {
        self.fake()
            .account()
            .statements
            .get(handle)
            .is_some_and(|s| s.cancelled)
    }

    /// Registers statement `handle` as if submitted earlier (by another
    /// server), with the default script.
    pub fn add_statement(&self, handle: &str) {
        self.fake()
            .account()
            .statements
            .insert(handle.to_owned(), Statement::new(SUCCESS));
    }
}

fn running(handle: &str) -> Response {
    answer(
        StatusCode::ACCEPTED,
        json!({
            "code": "333334",
            "message": ASYNC_MESSAGE,
            "statementHandle": handle,
            "statementStatusUrl": status_url(handle),
        }),
    )
}

async fn submit(
    State(fake): State<Fake>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = fake.admit(&headers, |calls| &mut calls.submit) {
        return *denied;
    }
    let invalid_payload = || {
        answer(
            StatusCode::BAD_REQUEST,
            json!({"code": "390142", "message": "Incoming request does not contain a valid payload."}),
        )
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return invalid_payload();
    };
    fake.ledger.record(body.clone(), &headers);
    if query.get("async").map(String::as_str) != Some("true") {
        // The real service would wait up to 45 s; the fake insists on async.
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"code": "390142", "message": "The fake serves asynchronous submissions only (async=true)."}),
        );
    }
    let Some(statement) = body["statement"].as_str() else {
        return invalid_payload();
    };
    if !bindings_valid(body.get("bindings"), placeholders(statement)) {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({
                "code": "002049",
                "message": "SQL compilation error: Bind variable ? not set.",
                "sqlState": "42601",
            }),
        );
    }
    let script = if statement.contains("-- throttled") {
        return answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"message": "Too many requests"}),
        );
    } else if statement.contains("-- broken") {
        return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response();
    } else if statement.contains("MISSING_TABLE") {
        MISSING_TABLE
    } else if statement.contains("-- slow") {
        SLOW
    } else {
        SUCCESS
    };
    let mut account = fake.account();
    account.next += 1;
    let handle = format!("01b9a8c2-0000-4e5f-0000-{:012}", account.next);
    account
        .statements
        .insert(handle.clone(), Statement::new(script));
    running(&handle)
}

impl Statement {
    /// The answer to a status request about this statement, `handle`: one
    /// step further along its script.
    fn status(&mut self, handle: &str) -> Response {
        if self.cancelled {
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "code": "000604",
                    "message": "SQL execution canceled",
                    "sqlState": "57014",
                    "statementHandle": handle,
                    "statementStatusUrl": status_url(handle),
                }),
            );
        }
        match fake_http::advance(self.script, &mut self.polls) {
            Step::Running => running(handle),
            Step::Succeeded => answer(
                StatusCode::OK,
                json!({
                    "resultSetMetaData": {
                        "numRows": 1,
                        "format": "jsonv2",
                        "partitionInfo": [{"rowCount": 1, "uncompressedSize": 4}],
                        "rowType": [{
                            "name": "N",
                            "database": "",
                            "schema": "",
                            "table": "",
                            "type": "fixed",
                            "scale": 0,
                            "precision": 1,
                            "byteLength": null,
                            "length": null,
                            "collation": null,
                            "nullable": false,
                        }],
                    },
                    "data": [["1"]],
                    "code": "090001",
                    "statementStatusUrl": status_url(handle),
                    "requestId": format!("{handle}-request"),
                    "sqlState": "00000",
                    "statementHandle": handle,
                    "message": "Statement executed successfully.",
                    "createdOn": self.created_ms,
                }),
            ),
            Step::Failed => answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "code": "002003",
                    "message": "SQL compilation error:\nObject 'MISSING_TABLE' does not exist or not authorized.",
                    "sqlState": "02000",
                    "statementHandle": handle,
                    "statementStatusUrl": status_url(handle),
                    "createdOn": self.created_ms,
                }),
            ),
        }
    }

    /// The answer to a cancel of this statement, `handle`: cancelled unless
    /// a status answer showed it finished already.
    fn cancel(&mut self, handle: &str) -> Response {
        if !self.finished() {
            self.cancelled = true;
        }
        answer(
            StatusCode::OK,
            json!({
                "message": "Statement aborted.",
                "statementHandle": handle,
                "statementStatusUrl": status_url(handle),
            }),
        )
    }
}

async fn status(State(fake): State<Fake>, path: Path<String>, headers: HeaderMap) -> Response {
    fake.on_statement(&headers, path, |calls| &mut calls.status, Statement::status)
}

async fn cancel(State(fake): State<Fake>, path: Path<String>, headers: HeaderMap) -> Response {
    fake.on_statement(&headers, path, |calls| &mut calls.cancel, Statement::cancel)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        fake_http::client::{agent, reply, served},
        jwt::{
            OTHER_KEY, SERVICE_KEY, SERVICE_PUBLIC_KEY, fixture, fixture_public_key, now_secs,
            sign_rs256,
        },
    };

    fn token(fake: &FakeSnowflake, key: &str) -> String {
        let now = now_secs();
        sign_rs256(
            &json!({"typ": "JWT"}),
            &json!({"iss": fake.issuer(), "sub": fake.subject(), "iat": now, "exp": now + 3600}),
            &fixture(key),
        )
    }

    #[test]
    fn placeholders_in_strings_do_not_count() {
        assert_eq!(placeholders("SELECT ? , '?''?' , ?"), 2);
        let one = json!({"1": {"type": "FIXED", "value": "42"}});
        assert!(bindings_valid(Some(&one), 1));
        assert!(!bindings_valid(Some(&one), 2));
        assert!(!bindings_valid(None, 1));
        assert!(bindings_valid(None, 0));
        assert!(!bindings_valid(
            Some(&json!({"1": {"type": "INT", "value": "42"}})),
            1
        ));
        assert!(!bindings_valid(
            Some(&json!({"1": {"type": "FIXED", "value": 42}})),
            1
        ));
        assert_eq!(claims_account("xy12345.us-east-2.aws"), "XY12345");
        assert_eq!(claims_account("myorg-analytics"), "MYORG-ANALYTICS");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_runs_to_success_is_cancelled_and_tokens_are_checked() {
        let fake = FakeSnowflake::start(
            "xy12345.us-east-2.aws",
            "flyte",
            fixture_public_key(SERVICE_PUBLIC_KEY),
        )
        .await;
        assert!(
            fake.issuer().starts_with("XY12345.FLYTE.SHA256:557AGr"),
            "{}",
            fake.issuer()
        );
        let agent = agent();
        let submit = format!("{}/api/v2/statements?async=true", fake.base_url());
        let body = |statement: &str| {
            json!({
                "statement": statement,
                "timeout": 60,
                "database": "DB",
                "schema": "PUBLIC",
                "warehouse": "WH",
                "bindings": {"1": {"type": "FIXED", "value": "42"}},
            })
            .to_string()
        };
        let good = format!("Bearer {}", token(&fake, SERVICE_KEY));
        let post = |url: &str, bearer: &str| {
            agent
                .post(url)
                .header("authorization", bearer)
                .header("x-snowflake-authorization-token-type", "KEYPAIR_JWT")
                .header("user-agent", "flyte-connect-test/1")
        };

        // Refused: the wrong key, and the right key without the token type.
        let wrong = format!("Bearer {}", token(&fake, OTHER_KEY));
        let (status, refused) = reply(post(&submit, &wrong).send(body("SELECT ?")));
        assert_eq!(status, 401);
        assert_eq!(
            refused,
            json!({"code": "390144", "message": "JWT token is invalid. [bad signature]"})
        );
        let (status, _) = reply(
            agent
                .post(&submit)
                .header("authorization", &good)
                .send(body("SELECT ?")),
        );
        assert_eq!(status, 401);
        assert_eq!(fake.calls().unauthorized, 2);

        // Submitted, running, then the result.
        let (status, submitted) = reply(post(&submit, &good).send(body("SELECT ? AS N")));
        assert_eq!(status, 202, "{submitted}");
        assert_eq!(submitted["code"], "333334");
        let handle = submitted["statementHandle"].as_str().expect("a handle");
        let url = format!(
            "{}{}",
            fake.base_url(),
            submitted["statementStatusUrl"].as_str().expect("a URL")
        );
        let get = |url: &str| {
            reply(
                agent
                    .get(url)
                    .header("authorization", &good)
                    .header("x-snowflake-authorization-token-type", "KEYPAIR_JWT")
                    .call(),
            )
        };
        assert_eq!(get(&url).0, 202);
        let (status, result) = get(&url);
        assert_eq!(status, 200);
        assert_eq!(result["data"], json!([["1"]]));
        assert_eq!(result["statementHandle"], handle);
        assert_eq!(fake.user_agents(), ["flyte-connect-test/1"]);

        // Unbound placeholders, a missing table, a throttled submit.
        let (status, unbound) = reply(post(&submit, &good).send(body("SELECT ?, ?")));
        assert_eq!((status, &unbound["code"]), (422, &json!("002049")));
        let (_, missing) = reply(post(&submit, &good).send(body("SELECT ? FROM MISSING_TABLE")));
        let url = format!(
            "{}/api/v2/statements/{}",
            fake.base_url(),
            missing["statementHandle"].as_str().expect("a handle")
        );
        get(&url);
        let (status, failed) = get(&url);
        assert_eq!((status, &failed["code"]), (422, &json!("002003")));
        let (status, _) = reply(post(&submit, &good).send(body("SELECT ? -- throttled")));
        assert_eq!(status, 429);

        // A slow statement, cancelled.
        let (_, slow) = reply(post(&submit, &good).send(body("SELECT ? -- slow")));
        let slow = slow["statementHandle"]
            .as_str()
            .expect("a handle")
            .to_owned();
        let url = format!("{}/api/v2/statements/{slow}", fake.base_url());
        assert_eq!(get(&url).0, 202);
        let (status, aborted) = reply(post(&format!("{url}/cancel"), &good).send_empty());
        assert_eq!(
            (status, &aborted["message"]),
            (200, &json!("Statement aborted."))
        );
        assert!(fake.cancelled(&slow));
        let (status, canceled) = get(&url);
        assert_eq!((status, &canceled["code"]), (422, &json!("000604")));

        // Unknown handles, one submitted elsewhere, and the counters.
        let (status, unknown) = get(&format!("{}/api/v2/statements/nope", fake.base_url()));
        assert_eq!((status, &unknown["code"]), (404, &json!("000709")));
        fake.add_statement("01b9a8c2-0000-4e5f-0000-999999999999");
        let (status, _) = get(&format!(
            "{}/api/v2/statements/01b9a8c2-0000-4e5f-0000-999999999999",
            fake.base_url()
        ));
        assert_eq!(status, 202);
        assert_eq!(
            fake.calls(),
            Calls {
                submit: 5,
                status: 8,
                cancel: 1,
                unauthorized: 2,
            }
        );
        assert_eq!(fake.statements().len(), 5);
        let (served, recorded) = served(&fake.base_url());
        assert_eq!(served["submit"], 5);
        assert_eq!(recorded[0]["body"]["statement"], "SELECT ? AS N");
        assert_eq!(recorded[0]["user_agent"], "flyte-connect-test/1");
    }
}
