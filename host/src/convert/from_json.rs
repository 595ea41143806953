//! JSON → Flyte literal, for the outputs a connector returns: exactly as a
//! literal type says, or inferred the way the Python server infers a
//! literal from a native value.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

use super::{ConvertError, msgpack};
use crate::proto::core::{
    self, Binary, Blob, BlobMetadata, BlobType, EnumType, Literal, LiteralCollection, LiteralMap,
    LiteralType, Primitive, Scalar, Schema, SimpleType, StructuredDataset,
    StructuredDatasetMetadata, StructuredDatasetType, Union, Void, blob_type::BlobDimensionality,
    literal, literal_type, primitive, scalar,
};

/// A literal holding one scalar.
pub(super) fn scalar_literal(value: scalar::Value) -> Literal {
    Literal {
        value: Some(literal::Value::Scalar(Box::new(Scalar {
            value: Some(value),
        }))),
        ..Default::default()
    }
}

/// A literal holding one primitive.
pub(super) fn primitive_literal(value: primitive::Value) -> Literal {
    scalar_literal(scalar::Value::Primitive(Primitive { value: Some(value) }))
}

fn none_literal() -> Literal {
    scalar_literal(scalar::Value::NoneType(Void {}))
}

fn msgpack_literal(value: &Value, path: &str) -> Result<Literal, ConvertError> {
    let bytes = msgpack::encode(value).map_err(|message| ConvertError::new(path, message))?;
    Ok(scalar_literal(scalar::Value::Binary(Binary {
        value: bytes,
        tag: msgpack::TAG.to_owned(),
    })))
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn mismatch(path: &str, expected: &str, value: &Value) -> ConvertError {
    ConvertError::new(
        path,
        format!("expected {expected}, got {}", describe(value)),
    )
}

/// Infers a literal from JSON alone: integer, float, string, boolean, none,
/// a collection of inferred literals, or msgpack binary for an object.
pub fn untyped_literal_from_json(value: &Value, path: &str) -> Result<Literal, ConvertError> {
    Ok(match value {
        Value::Null => none_literal(),
        Value::Bool(b) => primitive_literal(primitive::Value::Boolean(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => primitive_literal(primitive::Value::Integer(i)),
            None if n.is_u64() => {
                return Err(ConvertError::new(
                    path,
                    format!("integer {n} does not fit in 64 bits"),
                ));
            }
            None => primitive_literal(primitive::Value::FloatValue(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => primitive_literal(primitive::Value::StringValue(s.clone())),
        Value::Array(items) => collection(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| untyped_literal_from_json(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(_) => msgpack_literal(value, path)?,
    })
}

fn collection(literals: Vec<Literal>) -> Literal {
    Literal {
        value: Some(literal::Value::Collection(LiteralCollection { literals })),
        ..Default::default()
    }
}

/// Builds exactly the literal `literal_type` describes from `value`.
pub fn literal_from_json(
    value: &Value,
    literal_type: &LiteralType,
    path: &str,
) -> Result<Literal, ConvertError> {
    let kind = literal_type
        .r#type
        .as_ref()
        .ok_or_else(|| ConvertError::new(path, "literal type has no kind"))?;
    match kind {
        literal_type::Type::Simple(simple) => {
            let simple = SimpleType::try_from(*simple)
                .map_err(|_| ConvertError::new(path, format!("unknown simple type {simple}")))?;
            simple_from_json(value, simple, path)
        }
        literal_type::Type::CollectionType(item_type) => {
            collection_from_json(value, item_type, path)
        }
        literal_type::Type::MapValueType(value_type) => map_from_json(value, value_type, path),
        literal_type::Type::Blob(blob_type) => blob_from_json(value, blob_type, path),
        literal_type::Type::StructuredDatasetType(dataset_type) => {
            dataset_from_json(value, dataset_type, path)
        }
        literal_type::Type::Schema(schema_type) => {
            let (uri, _) = uri_and_format(value, path, "a schema")?;
            Ok(scalar_literal(scalar::Value::Schema(Schema {
                uri,
                r#type: Some(schema_type.clone()),
            })))
        }
        literal_type::Type::EnumType(enum_type) => enum_from_json(value, enum_type, path),
        literal_type::Type::UnionType(union_type) => union_from_json(value, union_type, path),
    }
}

/// Binary data: `{"tag", "value"}`, the value base64.
fn binary_from_json(value: &Value, path: &str) -> Result<Literal, ConvertError> {
    let tag = value.get("tag").and_then(Value::as_str);
    let data = value.get("value").and_then(Value::as_str);
    let (Some(tag), Some(data)) = (tag, data) else {
        return Err(mismatch(
            path,
            "an object {\"tag\", \"value\"} with base64 value",
            value,
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|err| ConvertError::new(path, format!("value is not base64: {err}")))?;
    Ok(scalar_literal(scalar::Value::Binary(Binary {
        value: bytes,
        tag: tag.to_owned(),
    })))
}

/// An error: `{"error": {"failed_node_id", "message"}}`, as inputs show it,
/// or the inner object.
fn error_from_json(value: &Value, path: &str) -> Result<Literal, ConvertError> {
    let error = value.get("error").unwrap_or(value);
    let Some(error) = error.as_object() else {
        return Err(mismatch(
            path,
            "an error object {\"failed_node_id\", \"message\"}",
            value,
        ));
    };
    let field = |name: &str| match error.get(name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(mismatch(&format!("{path}.{name}"), "a string", other)),
    };
    Ok(scalar_literal(scalar::Value::Error(core::Error {
        failed_node_id: field("failed_node_id")?,
        message: field("message")?,
    })))
}

/// A collection: a JSON array of items of `item_type`.
fn collection_from_json(
    value: &Value,
    item_type: &LiteralType,
    path: &str,
) -> Result<Literal, ConvertError> {
    let items = value
        .as_array()
        .ok_or_else(|| mismatch(path, "an array", value))?;
    Ok(collection(
        items
            .iter()
            .enumerate()
            .map(|(i, item)| literal_from_json(item, item_type, &format!("{path}[{i}]")))
            .collect::<Result<_, _>>()?,
    ))
}

/// A map: a JSON object of values of `value_type`.
fn map_from_json(
    value: &Value,
    value_type: &LiteralType,
    path: &str,
) -> Result<Literal, ConvertError> {
    let object = value
        .as_object()
        .ok_or_else(|| mismatch(path, "an object", value))?;
    let literals = object
        .iter()
        .map(|(key, item)| {
            Ok((
                key.clone(),
                literal_from_json(item, value_type, &format!("{path}[{key:?}]"))?,
            ))
        })
        .collect::<Result<BTreeMap<_, _>, ConvertError>>()?;
    Ok(Literal {
        value: Some(literal::Value::Map(LiteralMap { literals })),
        ..Default::default()
    })
}

/// A dataframe: `{"uri", "format"}`.
fn dataset_from_json(
    value: &Value,
    dataset_type: &StructuredDatasetType,
    path: &str,
) -> Result<Literal, ConvertError> {
    let (uri, format) = uri_and_format(value, path, "a dataframe")?;
    let mut dataset_type = dataset_type.clone();
    if let Some(format) = format {
        dataset_type.format = format;
    }
    with_hash(
        scalar_literal(scalar::Value::StructuredDataset(StructuredDataset {
            uri,
            metadata: Some(StructuredDatasetMetadata {
                structured_dataset_type: Some(dataset_type),
            }),
        })),
        value,
        path,
    )
}

/// An enum's value: one of its strings.
fn enum_from_json(
    value: &Value,
    enum_type: &EnumType,
    path: &str,
) -> Result<Literal, ConvertError> {
    let chosen = value
        .as_str()
        .ok_or_else(|| mismatch(path, "a string", value))?;
    if !enum_type.values.iter().any(|v| v == chosen) {
        return Err(ConvertError::new(
            path,
            format!(
                "{chosen:?} is not one of the enum values {:?}",
                enum_type.values
            ),
        ));
    }
    Ok(primitive_literal(primitive::Value::StringValue(
        chosen.to_owned(),
    )))
}

fn simple_from_json(
    value: &Value,
    simple: SimpleType,
    path: &str,
) -> Result<Literal, ConvertError> {
    Ok(match simple {
        SimpleType::None => match value {
            Value::Null => none_literal(),
            other => return Err(mismatch(path, "null", other)),
        },
        SimpleType::Integer => {
            let i = value
                .as_i64()
                .ok_or_else(|| mismatch(path, "an integer that fits in 64 bits", value))?;
            primitive_literal(primitive::Value::Integer(i))
        }
        SimpleType::Float => {
            primitive_literal(primitive::Value::FloatValue(float_from_json(value, path)?))
        }
        SimpleType::String => {
            let s = value
                .as_str()
                .ok_or_else(|| mismatch(path, "a string", value))?;
            primitive_literal(primitive::Value::StringValue(s.to_owned()))
        }
        SimpleType::Boolean => {
            let b = value
                .as_bool()
                .ok_or_else(|| mismatch(path, "a boolean", value))?;
            primitive_literal(primitive::Value::Boolean(b))
        }
        SimpleType::Datetime => {
            let timestamp = serde_json::from_value(value.clone()).map_err(|err| {
                ConvertError::new(path, format!("expected an RFC 3339 datetime string: {err}"))
            })?;
            primitive_literal(primitive::Value::Datetime(timestamp))
        }
        SimpleType::Duration => {
            let duration = serde_json::from_value(value.clone()).map_err(|err| {
                ConvertError::new(
                    path,
                    format!("expected a duration string like \"1.5s\": {err}"),
                )
            })?;
            primitive_literal(primitive::Value::Duration(duration))
        }
        SimpleType::Binary => binary_from_json(value, path)?,
        SimpleType::Error => error_from_json(value, path)?,
        // Flyte 2 carries dataclasses, pydantic models and dicts as msgpack.
        SimpleType::Struct => msgpack_literal(value, path)?,
    })
}

/// A float from a JSON number or the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
fn float_from_json(value: &Value, path: &str) -> Result<f64, ConvertError> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| mismatch(path, "a float", value)),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(ConvertError::new(
                path,
                format!("expected a float, got the string {s:?}"),
            )),
        },
        other => Err(mismatch(path, "a float", other)),
    }
}

/// `{"uri", "format"?}` or a bare URI string.
fn uri_and_format(
    value: &Value,
    path: &str,
    what: &str,
) -> Result<(String, Option<String>), ConvertError> {
    match value {
        Value::String(uri) => Ok((uri.clone(), None)),
        Value::Object(object) => {
            let uri = object
                .get("uri")
                .and_then(Value::as_str)
                .ok_or_else(|| ConvertError::new(path, format!("{what} needs a string \"uri\"")))?;
            let format = object
                .get("format")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok((uri.to_owned(), format))
        }
        other => Err(mismatch(
            path,
            &format!("{what} ({{\"uri\", \"format\"}} or a URI string)"),
            other,
        )),
    }
}

fn blob_from_json(
    value: &Value,
    blob_type: &BlobType,
    path: &str,
) -> Result<Literal, ConvertError> {
    let (uri, format) = uri_and_format(value, path, "a file or directory")?;
    let mut blob_type = blob_type.clone();
    if let Some(format) = format {
        blob_type.format = format;
    }
    if let Some(dimensionality) = value.get("dimensionality").and_then(Value::as_str) {
        blob_type.dimensionality =
            BlobDimensionality::from_str_name(dimensionality).ok_or_else(|| {
                ConvertError::new(
                    path,
                    format!("dimensionality {dimensionality:?} is not SINGLE or MULTIPART"),
                )
            })? as i32;
    }
    with_hash(
        scalar_literal(scalar::Value::Blob(Blob {
            metadata: Some(BlobMetadata {
                r#type: Some(blob_type),
            }),
            uri,
        })),
        value,
        path,
    )
}

/// Sets `Literal.hash` (a caller-supplied cache key) from the value's
/// `"hash"` field, when it has one.
fn with_hash(mut literal: Literal, value: &Value, path: &str) -> Result<Literal, ConvertError> {
    match value.get("hash") {
        None | Some(Value::Null) => {}
        Some(Value::String(hash)) => literal.hash = hash.clone(),
        Some(other) => return Err(mismatch(&format!("{path}.hash"), "a string", other)),
    }
    Ok(literal)
}

/// The first variant the value converts to; `null` prefers a `NONE` variant.
fn union_from_json(
    value: &Value,
    union_type: &core::UnionType,
    path: &str,
) -> Result<Literal, ConvertError> {
    let is_none = |t: &&LiteralType| matches!(t.r#type, Some(literal_type::Type::Simple(s)) if s == SimpleType::None as i32);
    let ordered: Vec<&LiteralType> = if value.is_null() {
        union_type
            .variants
            .iter()
            .filter(is_none)
            .chain(union_type.variants.iter().filter(|t| !is_none(t)))
            .collect()
    } else {
        union_type.variants.iter().collect()
    };
    let mut reasons = Vec::new();
    for variant in ordered {
        match literal_from_json(value, variant, path) {
            Ok(inner) => {
                return Ok(scalar_literal(scalar::Value::Union(Box::new(Union {
                    value: Some(Box::new(inner)),
                    r#type: Some(variant.clone()),
                }))));
            }
            Err(err) => reasons.push(err.message),
        }
    }
    Err(ConvertError::new(
        path,
        format!("matches no variant of the union ({})", reasons.join("; ")),
    ))
}
