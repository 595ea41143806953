//! The contract fixtures under `wit/fixtures/`, checked from the SDK's side:
//! the state → phase table, resource-meta bytes, and the JSON the typed
//! output constructors write. The host's conversion tests check the same
//! files, so the two cannot drift.

use flyte_connector_sdk::{
    __private::{decode_meta, encode_meta},
    Output, Phase,
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
