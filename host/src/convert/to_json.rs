//! Flyte literal → JSON, for the inputs a connector receives.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{ConvertError, msgpack};
use crate::proto::core::{self, blob_type::BlobDimensionality, literal, primitive, scalar};

/// Converts one literal; `path` names it in errors.
pub fn literal_to_json(literal: &core::Literal, path: &str) -> Result<Value, ConvertError> {
    match &literal.value {
        Some(literal::Value::Scalar(scalar)) => {
            let mut value = scalar_to_json(scalar, path)?;
            // A file's, directory's or dataframe's cache key travels with it,
            // so a connector that passes it on keeps the user's caching.
            let carries_hash = matches!(
                scalar.value,
                Some(scalar::Value::Blob(_) | scalar::Value::StructuredDataset(_))
            );
            if carries_hash
                && !literal.hash.is_empty()
                && let Value::Object(object) = &mut value
            {
                object.insert("hash".to_owned(), Value::String(literal.hash.clone()));
            }
            Ok(value)
        }
        Some(literal::Value::Collection(collection)) => collection
            .literals
            .iter()
            .enumerate()
            .map(|(i, item)| literal_to_json(item, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Some(literal::Value::Map(map)) => map
            .literals
            .iter()
            .map(|(key, item)| {
                Ok((
                    key.clone(),
                    literal_to_json(item, &format!("{path}[{key:?}]"))?,
                ))
            })
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        Some(literal::Value::OffloadedMetadata(offloaded)) => Ok(json!({
            "uri": offloaded.uri,
            "size_bytes": offloaded.size_bytes,
        })),
        None => Err(ConvertError::new(path, "literal has no value")),
    }
}

fn scalar_to_json(scalar: &core::Scalar, path: &str) -> Result<Value, ConvertError> {
    let value = scalar
        .value
        .as_ref()
        .ok_or_else(|| ConvertError::new(path, "scalar has no value"))?;
    Ok(match value {
        scalar::Value::Primitive(primitive) => primitive_to_json(primitive, path)?,
        scalar::Value::Blob(blob) => {
            let blob_type = blob.metadata.as_ref().and_then(|m| m.r#type.as_ref());
            let dimensionality = blob_type
                .map(|t| t.dimensionality())
                .unwrap_or(BlobDimensionality::Single);
            json!({
                "uri": blob.uri,
                "format": blob_type.map(|t| t.format.as_str()).unwrap_or_default(),
                "dimensionality": dimensionality.as_str_name(),
            })
        }
        scalar::Value::Binary(binary) if binary.tag == msgpack::TAG => {
            msgpack::decode(&binary.value).map_err(|message| ConvertError::new(path, message))?
        }
        scalar::Value::Binary(binary) => json!({
            "tag": binary.tag,
            "value": base64::engine::general_purpose::STANDARD.encode(&binary.value),
        }),
        scalar::Value::Schema(schema) => json!({ "uri": schema.uri }),
        scalar::Value::NoneType(_) => Value::Null,
        scalar::Value::Error(error) => json!({
            "error": { "failed_node_id": error.failed_node_id, "message": error.message },
        }),
        scalar::Value::Generic(generic) => serde_json::to_value(generic)
            .map_err(|err| ConvertError::new(path, format!("invalid struct: {err}")))?,
        scalar::Value::StructuredDataset(dataset) => json!({
            "uri": dataset.uri,
            "format": dataset
                .metadata
                .as_ref()
                .and_then(|m| m.structured_dataset_type.as_ref())
                .map(|t| t.format.as_str())
                .unwrap_or_default(),
        }),
        scalar::Value::Union(union) => match &union.value {
            Some(inner) => literal_to_json(inner, path)?,
            None => return Err(ConvertError::new(path, "union has no value")),
        },
    })
}

fn primitive_to_json(primitive: &core::Primitive, path: &str) -> Result<Value, ConvertError> {
    let value = primitive
        .value
        .as_ref()
        .ok_or_else(|| ConvertError::new(path, "primitive has no value"))?;
    Ok(match value {
        primitive::Value::Integer(i) => Value::from(*i),
        primitive::Value::FloatValue(f) => float_to_json(*f),
        primitive::Value::StringValue(s) => Value::String(s.clone()),
        primitive::Value::Boolean(b) => Value::Bool(*b),
        primitive::Value::Datetime(timestamp) => serde_json::to_value(timestamp)
            .map_err(|err| ConvertError::new(path, format!("invalid datetime: {err}")))?,
        primitive::Value::Duration(duration) => serde_json::to_value(duration)
            .map_err(|err| ConvertError::new(path, format!("invalid duration: {err}")))?,
    })
}

/// A float as JSON: a number when finite, else the proto3 JSON spelling
/// (`"NaN"`, `"Infinity"`, `"-Infinity"`), so nothing is lost.
pub(super) fn float_to_json(f: f64) -> Value {
    if f.is_nan() {
        Value::from("NaN")
    } else if f == f64::INFINITY {
        Value::from("Infinity")
    } else if f == f64::NEG_INFINITY {
        Value::from("-Infinity")
    } else {
        // Finite floats always make a JSON number.
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}
