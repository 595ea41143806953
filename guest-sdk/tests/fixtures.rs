//! The contract fixtures under `wit/fixtures/`, checked from the SDK's side:
//! the state → phase table, resource-meta bytes, the JSON the typed output
//! constructors write, and what the HTTP client makes of statuses, error
//! codes and timeouts. The host's conversion tests and the Python SDK's
//! tests check the same files, so they cannot drift.

// All of this file is a test: its helpers panic on what a test rejects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flyte_connector_sdk::{
    __private::{
        decode_meta, encode_meta, http_deadline_error, http_error_for_body_failure,
        http_error_for_code, http_response,
    },
    Error, HttpError, Output, Phase,
};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/../wit/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The flyteidl2 name of a phase.
fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Undefined => "UNDEFINED",
        Phase::Queued => "QUEUED",
        Phase::Running => "RUNNING",
        Phase::Succeeded => "SUCCEEDED",
        Phase::Aborted => "ABORTED",
        Phase::Failed => "FAILED",
        Phase::Initializing => "INITIALIZING",
        Phase::WaitingForResources => "WAITING_FOR_RESOURCES",
        Phase::RetryableFailed => "RETRYABLE_FAILED",
    }
}

#[test]
fn states_map_to_the_phases_flyte_maps_them_to() {
    let table = fixture("phases.json");
    let states = table["states"].as_object().expect("states");
    assert!(states.len() >= 10, "the fixture lost its cases");
    for (state, phase) in states {
        let mapped = Phase::from_state(state).unwrap_or_else(|err| panic!("{state}: {err}"));
        assert_eq!(phase_name(mapped), phase, "state {state:?}");
    }
    for case in table["unrecognized"].as_array().expect("unrecognized") {
        let state = case["state"].as_str().expect("state");
        let err = Phase::from_state(state).expect_err(state);
        assert_eq!(err.message(), case["error"], "state {state:?}");
    }
}

#[test]
fn metas_are_the_bytes_flyte_writes_and_read_back() {
    let metas = fixture("resource-metas.json");
    let cases = metas["metas"].as_array().expect("metas");
    assert!(!cases.is_empty(), "the fixture lost its cases");
    for case in cases {
        let encoded = encode_meta(&case["meta"]).expect("encode");
        assert_eq!(
            String::from_utf8(encoded).expect("UTF-8"),
            case["encoded"].as_str().expect("encoded"),
        );
        let decoded: Value =
            decode_meta(case["encoded"].as_str().expect("encoded").as_bytes()).expect("decode");
        assert_eq!(decoded, case["meta"]);
    }
}

#[test]
fn typed_output_constructors_write_the_promised_json() {
    let literals = fixture("literals.json");
    let json_of = |name: &str| -> Value {
        literals["typed"]
            .as_array()
            .expect("typed")
            .iter()
            .find(|case| case["name"] == name)
            .map(|case| case["json"].clone())
            .unwrap_or_else(|| panic!("no case {name:?}"))
    };
    for (name, output) in [
        ("file", Output::file("s3://bucket/data.csv", "")),
        ("directory", Output::directory("s3://bucket/dir", "")),
        (
            "dataframe",
            Output::dataframe("s3://bucket/df.parquet", "parquet"),
        ),
    ] {
        assert_eq!(output.value(), &json_of(name), "{name}");
    }
}

/// The fixture's name for the kind of an HTTP error.
fn http_kind(error: &HttpError) -> &'static str {
    match error {
        HttpError::Denied { .. } => "denied",
        HttpError::Connection { .. } => "connection",
        HttpError::Timeout { .. } => "timeout",
        HttpError::Status { .. } => "status",
        HttpError::Invalid { .. } => "invalid",
        _ => "unknown",
    }
}

#[test]
fn statuses_below_400_are_ok_and_429_and_5xx_retryable() {
    let http = fixture("http.json");
    let (method, url) = (
        http["request"]["method"].as_str().expect("method"),
        http["request"]["url"].as_str().expect("url"),
    );
    let statuses = http["statuses"].as_array().expect("statuses");
    assert!(statuses.len() >= 18, "the fixture lost its cases");
    for case in statuses {
        let status = case["status"]
            .as_u64()
            .and_then(|status| u16::try_from(status).ok())
            .expect("status");
        let response = http_response(method, url, status, b"answer".to_vec());
        assert_eq!(
            Value::from(response.is_ok()),
            case["ok"],
            "is_ok of {status}"
        );
        let checked = response.error_for_status();
        assert_eq!(
            Value::from(checked.is_err()),
            case["error"],
            "error_for_status of {status}"
        );
        let retryable = checked.as_ref().err().is_some_and(HttpError::is_retryable);
        assert_eq!(
            Value::from(retryable),
            case["retryable"],
            "retryable {status}"
        );
        if let Err(error) = checked {
            assert_eq!(error.status(), Some(status));
            let expected = if retryable { "retryable" } else { "failed" };
            let got = match Error::from(error) {
                Error::Retryable(_) => "retryable",
                _ => "failed",
            };
            assert_eq!(got, expected, "the connector error of {status}");
        }
    }

    let case = &http["status_error"];
    let status = case["status"].as_u64().and_then(|s| u16::try_from(s).ok());
    let body = case["body"].as_str().expect("body").as_bytes().to_vec();
    let error = http_response(method, url, status.expect("status"), body)
        .error_for_status()
        .expect_err("an error status");
    assert_eq!(
        error.to_string(),
        case["message"].as_str().expect("message")
    );
}

/// The fixture's request (method, URL), its `error_codes` cases and the
/// texts no message may contain.
fn http_error_cases(http: &Value) -> ((&str, &str), &Vec<Value>, Vec<&str>) {
    let request = (
        http["request"]["method"].as_str().expect("method"),
        http["request"]["url"].as_str().expect("url"),
    );
    let never = http["messages_never_contain"]
        .as_array()
        .expect("messages_never_contain")
        .iter()
        .map(|text| text.as_str().expect("text"))
        .collect();
    let cases = http["error_codes"].as_array().expect("error_codes");
    (request, cases, never)
}

/// Checks `error`, made of the code of `case`, against what the case says:
/// its kind, its retryability (also as a connector error) and its message.
fn assert_as_the_case_says(error: HttpError, case: &Value, never: &[&str], shown: &str) {
    assert_eq!(http_kind(&error), case["kind"], "kind of {shown}");
    assert_eq!(
        Value::from(error.is_retryable()),
        case["retryable"],
        "retryable {shown}"
    );
    let message = error.to_string();
    let contains = case["message_contains"].as_str().expect("message_contains");
    assert!(
        message.contains(contains),
        "{shown}: {message:?} lacks {contains:?}"
    );
    for text in never {
        assert!(!message.contains(text), "{shown}: {message:?} has {text:?}");
    }
    let connector_error = Error::from(error);
    assert_eq!(
        Value::from(matches!(connector_error, Error::Retryable(_))),
        case["retryable"],
        "the connector error of {shown}"
    );
}

#[test]
fn error_codes_are_sorted_and_named_as_the_fixture_says() {
    let http = fixture("http.json");
    let ((method, url), cases, never) = http_error_cases(&http);
    let distinct: std::collections::BTreeSet<&str> = cases
        .iter()
        .map(|case| case["code"].as_str().expect("code"))
        .collect();
    assert_eq!(
        distinct.len(),
        39,
        "every case of wasi:http 0.2's error-code"
    );
    for case in cases {
        let code = case["code"].as_str().expect("code");
        let shown = format!("{code} {}", case["payload"]);
        let error = http_error_for_code(code, &case["payload"], method, url)
            .unwrap_or_else(|| panic!("{shown}: not a wasi:http 0.2 error code"));
        assert_as_the_case_says(error, case, &never, &shown);
    }
}

/// The host breaks a response body's stream mid-way with the reason as an
/// error code (`HTTP-response-body-size` past the cap of a body without
/// `content-length`, `connection-read-timeout` past the between-bytes
/// timeout). The code read from the stream's io-error is sorted and named
/// as the same code failing the request is; reading it needs a host, so
/// this checks every step after it.
#[test]
fn a_broken_body_stream_is_sorted_by_the_code_it_carries() {
    let http = fixture("http.json");
    let ((method, url), cases, never) = http_error_cases(&http);
    for code in ["HTTP-response-body-size", "connection-read-timeout"] {
        assert!(
            cases.iter().any(|case| case["code"] == code),
            "the fixture lost its {code} case"
        );
    }
    for case in cases {
        let code = case["code"].as_str().expect("code");
        let shown = format!("a body stream broken with {code} {}", case["payload"]);
        let error = http_error_for_body_failure(Some((code, &case["payload"])), method, url)
            .unwrap_or_else(|| panic!("{shown}: not a wasi:http 0.2 error code"));
        assert_as_the_case_says(error, case, &never, &shown);
    }

    // A stream the host broke without a code is a broken connection.
    let error = http_error_for_body_failure(None, method, url).expect("a failure without a code");
    assert_eq!(http_kind(&error), "connection");
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        format!("cannot reach {url}: the connection broke while reading the answer")
    );
}

#[test]
fn the_timeout_bounds_the_whole_exchange_and_is_retryable() {
    let http = fixture("http.json");
    // The Rust client enforces the bound with one deadline around the
    // whole exchange (`Request::send`), so every stage is under it.
    assert_eq!(
        http["timeout_bounds"],
        serde_json::json!(["connect", "first-byte", "body"]),
        "Request::timeout bounds connect, first byte and body together"
    );
    let deadline = &http["deadline"];
    let seconds = deadline["timeout_seconds"]
        .as_u64()
        .expect("timeout_seconds");
    let error = http_deadline_error(
        http["request"]["method"].as_str().expect("method"),
        http["request"]["url"].as_str().expect("url"),
        Duration::from_secs(seconds),
    );
    assert_eq!(http_kind(&error), deadline["kind"]);
    assert_eq!(Value::from(error.is_retryable()), deadline["retryable"]);
    let contains = deadline["message_contains"]
        .as_str()
        .expect("message_contains");
    assert!(error.to_string().contains(contains), "{error}");
}

#[test]
fn retries_follow_the_fixture() {
    use flyte_connector_sdk::retry::{self, Retry};
    let fixture = fixture("http.json");
    let rules = &fixture["retry"];
    let ms = |value: &Value| Duration::from_millis(value.as_u64().expect("milliseconds"));
    for case in rules["methods"].as_array().expect("methods") {
        let method = case["method"].as_str().expect("method");
        assert_eq!(
            retry::repeatable(method, false),
            case["repeated"],
            "{method}"
        );
        assert_eq!(
            retry::repeatable(method, true),
            case["idempotent"],
            "{method} idempotent"
        );
    }
    for case in rules["statuses"].as_array().expect("statuses") {
        let status = case["status"].as_u64().expect("status") as u16;
        assert_eq!(retry::retried_status(status), case["retried"], "{status}");
    }
    for case in rules["error_codes"].as_array().expect("error codes") {
        let code = case["case"].as_str().expect("case");
        assert_eq!(retry::retried_code(code), case["retried"], "{code}");
    }
    let defaults = &rules["defaults"];
    assert_eq!(u64::from(retry::CALL_BUDGET), defaults["call_budget"]);
    let policy = Retry::default();
    assert_eq!(
        Retry::default(),
        Retry::none()
            .max_retries(defaults["max_retries"].as_u64().expect("max") as u32)
            .backoff(
                ms(&defaults["base_delay_ms"]),
                ms(&defaults["max_delay_ms"])
            )
    );
    for (index, bounds) in rules["backoff_ms"]
        .as_array()
        .expect("backoff")
        .iter()
        .enumerate()
    {
        let attempt = index as u32 + 1;
        assert_eq!(
            policy.backoff_bounds(attempt),
            (ms(&bounds[0]), ms(&bounds[1])),
            "retry {attempt}"
        );
    }
    let now = rules["retry_after"]["now"].as_u64().expect("now");
    for case in rules["retry_after"]["cases"].as_array().expect("cases") {
        let value = case["value"].as_str().expect("value");
        let expected = case["wait_ms"].as_u64().map(Duration::from_millis);
        assert_eq!(
            retry::retry_after(value, now),
            expected,
            "Retry-After: {value:?}"
        );
    }
    for pair in rules["reserve_ms"].as_array().expect("reserve") {
        assert_eq!(retry::reserve(ms(&pair[0])), ms(&pair[1]), "{pair}");
    }
    assert_eq!(retry::MIN_ATTEMPT, ms(&rules["min_attempt_ms"]));
}
