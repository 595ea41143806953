//! The Flyte type of a literal, inferred from the literal itself when the
//! template's interface does not declare it.

use crate::proto::core::{
    self, BlobType, LiteralType, SchemaType, SimpleType, StructuredDatasetType, UnionType, literal,
    literal_type, primitive, scalar,
};

use super::msgpack;

fn simple(simple: SimpleType) -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::Simple(simple as i32)),
        ..Default::default()
    }
}

fn of(kind: literal_type::Type) -> LiteralType {
    LiteralType {
        r#type: Some(kind),
        ..Default::default()
    }
}

/// The type a literal carries. A collection or map takes its element type
/// from its first element (`NONE` when empty).
pub fn infer_type(literal: &core::Literal) -> LiteralType {
    match &literal.value {
        Some(literal::Value::Scalar(scalar)) => scalar_type(scalar),
        Some(literal::Value::Collection(collection)) => {
            of(literal_type::Type::CollectionType(Box::new(
                collection
                    .literals
                    .first()
                    .map_or_else(|| simple(SimpleType::None), infer_type),
            )))
        }
        Some(literal::Value::Map(map)) => {
            let first = map.literals.values().next();
            of(literal_type::Type::MapValueType(Box::new(
                first.map_or_else(|| simple(SimpleType::None), infer_type),
            )))
        }
        Some(literal::Value::OffloadedMetadata(offloaded)) => offloaded
            .inferred_type
            .clone()
            .unwrap_or_else(|| simple(SimpleType::None)),
        None => simple(SimpleType::None),
    }
}

fn scalar_type(scalar: &core::Scalar) -> LiteralType {
    match &scalar.value {
        Some(scalar::Value::Primitive(primitive)) => simple(match primitive.value {
            Some(primitive::Value::Integer(_)) => SimpleType::Integer,
            Some(primitive::Value::FloatValue(_)) => SimpleType::Float,
            Some(primitive::Value::StringValue(_)) => SimpleType::String,
            Some(primitive::Value::Boolean(_)) => SimpleType::Boolean,
            Some(primitive::Value::Datetime(_)) => SimpleType::Datetime,
            Some(primitive::Value::Duration(_)) => SimpleType::Duration,
            None => SimpleType::None,
        }),
        Some(scalar::Value::Blob(blob)) => of(literal_type::Type::Blob(
            blob.metadata
                .as_ref()
                .and_then(|m| m.r#type.clone())
                .unwrap_or_else(BlobType::default),
        )),
        Some(scalar::Value::Binary(binary)) if binary.tag == msgpack::TAG => {
            simple(SimpleType::Struct)
        }
        Some(scalar::Value::Binary(_)) => simple(SimpleType::Binary),
        Some(scalar::Value::Schema(schema)) => of(literal_type::Type::Schema(
            schema.r#type.clone().unwrap_or_else(SchemaType::default),
        )),
        Some(scalar::Value::NoneType(_)) | None => simple(SimpleType::None),
        Some(scalar::Value::Error(_)) => simple(SimpleType::Error),
        Some(scalar::Value::Generic(_)) => simple(SimpleType::Struct),
        Some(scalar::Value::StructuredDataset(dataset)) => {
            of(literal_type::Type::StructuredDatasetType(
                dataset
                    .metadata
                    .as_ref()
                    .and_then(|m| m.structured_dataset_type.clone())
                    .unwrap_or_else(StructuredDatasetType::default),
            ))
        }
        Some(scalar::Value::Union(union)) => {
            let variant = union
                .r#type
                .clone()
                .or_else(|| union.value.as_deref().map(infer_type))
                .unwrap_or_else(|| simple(SimpleType::None));
            of(literal_type::Type::UnionType(UnionType {
                variants: vec![variant],
            }))
        }
    }
}
