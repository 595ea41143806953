//! Property tests: whatever literal a client sends and whatever JSON a
//! connector returns, conversion answers with a value or an error — it never
//! panics.

use proptest::prelude::*;
use serde_json::Value;

use super::{from_json::scalar_literal, *};
use crate::proto::core::{
    Binary, Blob, BlobMetadata, BlobType, EnumType, Error as ErrorLiteral, Literal,
    LiteralCollection, LiteralMap, LiteralOffloadedMetadata, LiteralType, Primitive, Schema,
    StructuredDataset, StructuredDatasetMetadata, StructuredDatasetType, Union, UnionType, Void,
    literal, literal_type, primitive, scalar,
};

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
    ]
}

fn any_primitive() -> impl Strategy<Value = primitive::Value> {
    prop_oneof![
        any::<i64>().prop_map(primitive::Value::Integer),
        any_f64().prop_map(primitive::Value::FloatValue),
        ".*".prop_map(primitive::Value::StringValue),
        any::<bool>().prop_map(primitive::Value::Boolean),
        // Out-of-range seconds and negative nanos included: they must be errors.
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| primitive::Value::Datetime(
            pbjson_types::Timestamp { seconds, nanos }
        )),
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| primitive::Value::Duration(
            pbjson_types::Duration { seconds, nanos }
        )),
    ]
}

fn any_leaf() -> impl Strategy<Value = Literal> {
    prop_oneof![
        prop::option::of(any_primitive())
            .prop_map(|value| scalar_literal(scalar::Value::Primitive(Primitive { value }))),
        (
            prop::collection::vec(any::<u8>(), 0..64),
            prop_oneof![Just("msgpack".to_owned()), ".*"]
        )
            .prop_map(|(value, tag)| scalar_literal(scalar::Value::Binary(Binary { value, tag }))),
        // Valid msgpack of arbitrary JSON, too, so decoding is reached past the header.
        any_json().prop_map(|value| scalar_literal(scalar::Value::Binary(Binary {
            value: rmp_serde::to_vec(&value).unwrap_or_default(),
            tag: "msgpack".into(),
        }))),
        (".*", ".*", 0..3i32).prop_map(|(uri, format, dimensionality)| scalar_literal(
            scalar::Value::Blob(Blob {
                metadata: Some(BlobMetadata {
                    r#type: Some(BlobType {
                        format,
                        dimensionality
                    }),
                }),
                uri,
            })
        )),
        (".*", ".*").prop_map(
            |(uri, format)| scalar_literal(scalar::Value::StructuredDataset(StructuredDataset {
                uri,
                metadata: Some(StructuredDatasetMetadata {
                    structured_dataset_type: Some(StructuredDatasetType {
                        format,
                        ..Default::default()
                    }),
                }),
            }))
        ),
        ".*".prop_map(|uri| scalar_literal(scalar::Value::Schema(Schema { uri, r#type: None }))),
        Just(scalar_literal(scalar::Value::NoneType(Void {}))),
        (".*", ".*").prop_map(
            |(failed_node_id, message)| scalar_literal(scalar::Value::Error(ErrorLiteral {
                failed_node_id,
                message
            }))
        ),
        any_json_object().prop_map(|object| scalar_literal(scalar::Value::Generic(
            serde_json::from_value(Value::Object(object)).unwrap_or_default()
        ))),
        (".*", any::<u64>()).prop_map(|(uri, size_bytes)| Literal {
            value: Some(literal::Value::OffloadedMetadata(
                LiteralOffloadedMetadata {
                    uri,
                    size_bytes,
                    inferred_type: None,
                }
            )),
            ..Default::default()
        }),
        Just(Literal::default()),
    ]
}

fn any_literal() -> impl Strategy<Value = Literal> {
    any_leaf().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|literals| Literal {
                value: Some(literal::Value::Collection(LiteralCollection { literals })),
                ..Default::default()
            }),
            prop::collection::btree_map(".*", inner.clone(), 0..6).prop_map(|literals| Literal {
                value: Some(literal::Value::Map(LiteralMap { literals })),
                ..Default::default()
            }),
            (
                prop::option::of(inner),
                prop::option::of(any_literal_type())
            )
                .prop_map(|(value, r#type)| {
                    scalar_literal(scalar::Value::Union(Box::new(Union {
                        value: value.map(Box::new),
                        r#type,
                    })))
                }),
        ]
    })
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            ".*",
            Just("NaN".to_owned()),
            Just("1.5s".to_owned()),
            Just("2024-01-01T00:00:00Z".to_owned())
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".*",
                    Just("uri".to_owned()),
                    Just("format".to_owned()),
                    Just("tag".to_owned())
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_json_object() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    prop::collection::btree_map(".*", any_json(), 0..4).prop_map(|m| m.into_iter().collect())
}

fn any_literal_type() -> impl Strategy<Value = LiteralType> {
    let leaf = prop_oneof![
        (-2..12i32).prop_map(literal_type::Type::Simple),
        ".*".prop_map(|format| literal_type::Type::Blob(BlobType {
            format,
            dimensionality: 0
        })),
        prop::collection::vec(".*", 0..3)
            .prop_map(|values| literal_type::Type::EnumType(EnumType { values })),
        ".*".prop_map(
            |format| literal_type::Type::StructuredDatasetType(StructuredDatasetType {
                format,
                ..Default::default()
            })
        ),
    ]
    .prop_map(|kind| LiteralType {
        r#type: Some(kind),
        ..Default::default()
    });
    prop_oneof![leaf, Just(LiteralType::default())].prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|t| literal_type::Type::CollectionType(Box::new(t))),
            inner
                .clone()
                .prop_map(|t| literal_type::Type::MapValueType(Box::new(t))),
            prop::collection::vec(inner, 0..4)
                .prop_map(|variants| literal_type::Type::UnionType(UnionType { variants })),
        ]
        .prop_map(|kind| LiteralType {
            r#type: Some(kind),
            ..Default::default()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_literal_converts_or_fails_cleanly(literal in any_literal()) {
        if let Ok(json) = literal_to_json(&literal, "input") {
            let _ = literal_from_json(&json, &infer_type(&literal), "output");
            let _ = untyped_literal_from_json(&json, "output");
        }
    }

    #[test]
    fn any_json_under_any_type_converts_or_fails_cleanly(json in any_json(), literal_type in any_literal_type()) {
        let _ = literal_from_json(&json, &literal_type, "output");
        let _ = untyped_literal_from_json(&json, "output");
    }

    #[test]
    fn well_typed_json_round_trips_through_literals(literal in any_literal()) {
        // Whatever converts to JSON and back under its own type converts to
        // the same JSON again: nothing is lost on the second trip. Only
        // well-typed literals (collections and maps of one element type) have
        // a type that describes every element.
        prop_assume!(is_homogeneous(&literal));
        if let Ok(json) = literal_to_json(&literal, "x")
            && let Ok(back) = literal_from_json(&json, &infer_type(&literal), "x") {
                let again = literal_to_json(&back, "x");
                prop_assert!(again.is_ok());
                if let Ok(again) = again {
                    prop_assert!(json_equal(&json, &again), "{json} != {again}");
                }
            }
    }

    #[test]
    fn arbitrary_bytes_never_crash_the_msgpack_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = msgpack::decode(&bytes);
    }
}

/// JSON equality where numbers compare by value (`1` and `1.0` are equal).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Whether the literal is well typed: every collection and map holds
/// elements of one inferred type, and every union value is of its variant.
fn is_homogeneous(literal: &Literal) -> bool {
    let all_alike = |items: Vec<&Literal>| {
        let first = items.first().map(|l| infer_type(l));
        items
            .iter()
            .all(|l| Some(infer_type(l)) == first && is_homogeneous(l))
    };
    match &literal.value {
        Some(literal::Value::Collection(c)) => all_alike(c.literals.iter().collect()),
        Some(literal::Value::Map(m)) => all_alike(m.literals.values().collect()),
        Some(literal::Value::Scalar(s)) => match &s.value {
            // A union's stated variant must be the type of its value.
            Some(scalar::Value::Union(u)) => u.value.as_deref().is_none_or(|inner| {
                is_homogeneous(inner) && u.r#type.as_ref().is_none_or(|t| *t == infer_type(inner))
            }),
            _ => true,
        },
        _ => true,
    }
}
