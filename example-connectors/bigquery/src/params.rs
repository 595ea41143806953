//! The task's inputs as BigQuery named query parameters, typed from the
//! task's interface.

use flyte_connector_sdk::{Error, utc_wall_clock};
use serde_json::{Map, Value, json};

/// The BigQuery type of a Flyte input type, if it has one.
fn bigquery_type(literal_type: &Value) -> Option<&'static str> {
    match literal_type.get("simple")?.as_str()? {
        "INTEGER" => Some("INT64"),
        "FLOAT" => Some("FLOAT64"),
        "STRING" => Some("STRING"),
        "BOOLEAN" => Some("BOOL"),
        "DATETIME" => Some("DATETIME"),
        "BINARY" => Some("BYTES"),
        _ => None,
    }
}

/// `queryParameters` for the inputs: one named scalar parameter per
/// input, in name order. An input of any other type is
/// [`Error::InvalidRequest`] naming it.
pub fn query_parameters(inputs: &Value, types: &Map<String, Value>) -> Result<Vec<Value>, Error> {
    let Some(inputs) = inputs.as_object() else {
        return Ok(Vec::new());
    };
    let mut names: Vec<&String> = inputs.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let unsupported = || {
                Error::invalid_request(format!(
                    "input `{name}` has a type BigQuery query parameters cannot take \
                     (int, float, str, bool, datetime and bytes can): {}",
                    types.get(name).unwrap_or(&Value::Null)
                ))
            };
            let bq_type = types
                .get(name)
                .and_then(bigquery_type)
                .ok_or_else(unsupported)?;
            let value = parameter_value(bq_type, &inputs[name]).ok_or_else(|| {
                Error::invalid_request(format!(
                    "input `{name}` is not a valid {bq_type} value: {}",
                    inputs[name]
                ))
            })?;
            Ok(json!({
                "name": name,
                "parameterType": {"type": bq_type},
                "parameterValue": {"value": value},
            }))
        })
        .collect()
}

/// A parameter's value as the REST API takes it: always a string (or null).
fn parameter_value(bq_type: &str, value: &Value) -> Option<Value> {
    Some(match (bq_type, value) {
        (_, Value::Null) => Value::Null,
        ("INT64", Value::Number(n)) if n.is_i64() || n.is_u64() => Value::String(n.to_string()),
        ("FLOAT64", Value::Number(n)) => Value::String(n.to_string()),
        // The host writes non-finite floats as "NaN", "Infinity", "-Infinity",
        // which BigQuery reads as such.
        ("FLOAT64", Value::String(s)) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => {
            Value::String(s.clone())
        }
        ("STRING", Value::String(s)) => Value::String(s.clone()),
        ("BOOL", Value::Bool(b)) => Value::String(b.to_string()),
        // The UTC wall-clock time with microseconds, as the Python client sends it.
        ("DATETIME", Value::String(s)) => Value::String(utc_wall_clock(s, 6)?),
        // Binary literals arrive as {"tag", "value"} with the value in base64,
        // which is how BigQuery takes BYTES.
        ("BYTES", Value::Object(binary)) => binary.get("value")?.as_str().map(Value::from)?,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Map<String, Value> {
        json!({
            "n": {"simple": "INTEGER"},
            "x": {"simple": "FLOAT"},
            "s": {"simple": "STRING"},
            "b": {"simple": "BOOLEAN"},
            "t": {"simple": "DATETIME"},
            "raw": {"simple": "BINARY"},
            "xs": {"collectionType": {"simple": "INTEGER"}},
        })
        .as_object()
        .cloned()
        .expect("object")
    }

    fn parameter(name: &str, value: Value) -> Result<Value, Error> {
        let inputs = json!({ name: value });
        query_parameters(&inputs, &types()).map(|mut params| params.remove(0))
    }

    #[test]
    fn scalars_become_typed_string_parameters() {
        for (name, value, bq_type, sent) in [
            ("n", json!(42), "INT64", json!("42")),
            ("x", json!(1.5), "FLOAT64", json!("1.5")),
            ("x", json!("NaN"), "FLOAT64", json!("NaN")),
            ("s", json!("it's"), "STRING", json!("it's")),
            ("b", json!(true), "BOOL", json!("true")),
            (
                "t",
                json!("2023-11-14T22:13:20.123456789+00:00"),
                "DATETIME",
                json!("2023-11-14T22:13:20.123456"),
            ),
            (
                "t",
                json!("2024-01-02T03:04:05Z"),
                "DATETIME",
                json!("2024-01-02T03:04:05.000000"),
            ),
            (
                "raw",
                json!({"tag": "", "value": "AAE="}),
                "BYTES",
                json!("AAE="),
            ),
            ("n", Value::Null, "INT64", Value::Null),
        ] {
            let param = parameter(name, value).expect(name);
            assert_eq!(param["name"], name);
            assert_eq!(param["parameterType"]["type"], bq_type);
            assert_eq!(param["parameterValue"]["value"], sent, "{name}");
        }
    }

    #[test]
    fn other_types_and_bad_values_name_the_input() {
        let err = parameter("xs", json!([1, 2])).expect_err("list");
        assert!(
            matches!(&err, Error::InvalidRequest(m) if m.contains("`xs`")),
            "{err}"
        );
        let err = parameter("n", json!("forty")).expect_err("not an int");
        assert!(
            matches!(&err, Error::InvalidRequest(m) if m.contains("`n`") && m.contains("INT64")),
            "{err}"
        );
        let err = parameter("t", json!("yesterday")).expect_err("not a datetime");
        assert!(err.message().contains("DATETIME"), "{err}");
        let err = query_parameters(&json!({"undeclared": 1}), &types()).expect_err("no type");
        assert!(err.message().contains("`undeclared`"), "{err}");
    }

    #[test]
    fn no_inputs_no_parameters() {
        assert!(
            query_parameters(&json!({}), &types())
                .expect("empty")
                .is_empty()
        );
        assert!(
            query_parameters(&Value::Null, &types())
                .expect("null")
                .is_empty()
        );
    }
}
