//! Conversion between Flyte protobuf values and the JSON connectors see.
//!
//! | Flyte literal | JSON |
//! | --- | --- |
//! | integer, float, string, boolean | number, number, string, bool (non-finite floats as `"NaN"`, `"Infinity"`, `"-Infinity"`) |
//! | datetime / duration | RFC 3339 string / proto3 duration string (`"1.5s"`) |
//! | none | `null` |
//! | collection / map | array / object |
//! | generic (`Struct`) | object |
//! | binary tagged `msgpack` | the decoded value |
//! | other binary | `{"tag", "value"}` (value in base64) |
//! | blob (File, Dir) | `{"uri", "format", "dimensionality"}` |
//! | structured dataset | `{"uri", "format"}` |
//! | schema | `{"uri"}` |
//! | union | the inner value |
//! | offloaded literal | `{"uri", "size_bytes"}` (not fetched) |
//! | error | `{"error": {"failed_node_id", "message"}}` |
//!
//! Outputs go back typed when the connector attaches a literal type, and are
//! otherwise inferred from the JSON as the Python server infers them from
//! native values.

mod from_json;
mod literal_type;
mod msgpack;
mod to_json;

use serde_json::{Map, Value};

use crate::{
    connector::Output,
    proto::{core, task},
};

pub use from_json::{literal_from_json, untyped_literal_from_json};
pub use literal_type::infer_type;
pub use to_json::literal_to_json;

/// A value that cannot be converted, and where it sits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConvertError {
    /// Where in the value: `input "x"[2]["key"]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConvertError {
    pub(crate) fn new(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// A task's inputs as the connector sees them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonInputs {
    /// Input name → value.
    pub values: Map<String, Value>,
    /// Input name → `LiteralType` (proto3 JSON): declared in the template's
    /// interface, else inferred from the literal.
    pub types: Map<String, Value>,
}

/// Converts a task's inputs; `interface` supplies declared types.
pub fn inputs_to_json(
    inputs: &task::Inputs,
    interface: Option<&core::TypedInterface>,
) -> Result<JsonInputs, ConvertError> {
    let declared = interface
        .and_then(|i| i.inputs.as_ref())
        .map(|vars| vars.variables.as_slice())
        .unwrap_or_default();
    let mut converted = JsonInputs::default();
    for named in &inputs.literals {
        let path = format!("input {:?}", named.name);
        let literal = named
            .value
            .as_ref()
            .ok_or_else(|| ConvertError::new(&path, "has no value"))?;
        let declared_type = declared
            .iter()
            .find(|entry| entry.key == named.name)
            .and_then(|entry| entry.value.as_ref())
            .and_then(|variable| variable.r#type.as_ref());
        let literal_type = match declared_type {
            Some(t) => t.clone(),
            None => infer_type(literal),
        };
        let type_json = serde_json::to_value(&literal_type)
            .map_err(|err| ConvertError::new(&path, format!("cannot encode its type: {err}")))?;
        converted
            .values
            .insert(named.name.clone(), literal_to_json(literal, &path)?);
        converted.types.insert(named.name.clone(), type_json);
    }
    Ok(converted)
}

/// Converts a connector's outputs to `task.Outputs`, typed where the
/// connector attached a literal type.
pub fn outputs_to_proto(outputs: &[Output]) -> Result<task::Outputs, ConvertError> {
    let literals = outputs
        .iter()
        .map(|output| {
            let path = format!("output {:?}", output.name);
            let literal = match &output.literal_type {
                Some(type_json) => {
                    let literal_type: core::LiteralType = serde_json::from_value(type_json.clone())
                        .map_err(|err| {
                            ConvertError::new(
                                &path,
                                format!("invalid literal type {type_json}: {err}"),
                            )
                        })?;
                    literal_from_json(&output.value, &literal_type, &path)?
                }
                None => untyped_literal_from_json(&output.value, &path)?,
            };
            Ok(task::NamedLiteral {
                name: output.name.clone(),
                value: Some(literal),
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(task::Outputs {
        literals,
        ..Default::default()
    })
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn struct_from_json(object: &Map<String, Value>) -> Result<pbjson_types::Struct, ConvertError> {
    serde_json::from_value(Value::Object(object.clone()))
        .map_err(|err| ConvertError::new("custom_info", err.to_string()))
}

/// A protobuf message as proto3 JSON.
pub fn message_to_json<M: serde::Serialize>(
    message: &M,
    what: &str,
) -> Result<Value, ConvertError> {
    serde_json::to_value(message).map_err(|err| ConvertError::new(what, err.to_string()))
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
