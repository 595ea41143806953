//! The contract fixtures under `wit/fixtures/`: the host's conversion must
//! give exactly the JSON a connector is promised for each literal, read it
//! back into the same literal, and infer the promised literal from untyped
//! JSON. The SDKs check the same files, so the three cannot drift.

use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::proto::core::{Literal, LiteralType};

const LITERALS: &str = include_str!("../../../wit/fixtures/literals.json");

#[derive(Deserialize)]
struct Fixtures {
    typed: Vec<TypedCase>,
    untyped: Vec<UntypedCase>,
}

#[derive(Deserialize)]
struct TypedCase {
    name: String,
    literal: Literal,
    #[serde(rename = "type")]
    literal_type: LiteralType,
    json: Value,
}

#[derive(Deserialize)]
struct UntypedCase {
    name: String,
    json: Value,
    literal: Literal,
}

fn fixtures() -> Fixtures {
    serde_json::from_str(LITERALS).expect("wit/fixtures/literals.json is valid")
}

#[test]
fn literals_become_the_promised_json_and_come_back_identical() {
    let fixtures = fixtures();
    assert!(fixtures.typed.len() >= 10, "the fixture lost its cases");
    for case in fixtures.typed {
        let json = literal_to_json(&case.literal, &case.name).expect(&case.name);
        assert_eq!(json, case.json, "{}: the JSON a connector sees", case.name);
        let back = literal_from_json(&case.json, &case.literal_type, &case.name)
            .unwrap_or_else(|err| panic!("{}: {err}", case.name));
        assert_eq!(
            back, case.literal,
            "{}: read back under its type",
            case.name
        );
    }
}

#[test]
fn untyped_json_is_inferred_as_the_python_server_infers_it() {
    for case in fixtures().untyped {
        let literal = untyped_literal_from_json(&case.json, &case.name).expect(&case.name);
        assert_eq!(literal, case.literal, "{}", case.name);
    }
}
