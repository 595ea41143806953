//! Round trips through the boundary: literal → JSON → literal, typed by the
//! literal's own (inferred or declared) type, must give back the same literal.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    from_json::{primitive_literal, scalar_literal},
    *,
};
use crate::proto::core::{
    Binary, Blob, BlobMetadata, BlobType, Literal, LiteralCollection, LiteralMap, LiteralType,
    Primitive, SimpleType, StructuredDataset, StructuredDatasetMetadata, StructuredDatasetType,
    UnionType, Void, blob_type::BlobDimensionality, literal, literal_type, primitive, scalar,
};

fn collection(items: Vec<Literal>) -> Literal {
    Literal {
        value: Some(literal::Value::Collection(LiteralCollection {
            literals: items,
        })),
        ..Default::default()
    }
}

fn map(entries: Vec<(&str, Literal)>) -> Literal {
    Literal {
        value: Some(literal::Value::Map(LiteralMap {
            literals: entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<BTreeMap<_, _>>(),
        })),
        ..Default::default()
    }
}

fn simple(t: SimpleType) -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::Simple(t as i32)),
        ..Default::default()
    }
}

fn msgpack_of(value: &Value) -> Literal {
    scalar_literal(scalar::Value::Binary(Binary {
        value: rmp_serde::to_vec(value).expect("encode"),
        tag: "msgpack".into(),
    }))
}

/// Literal → JSON → literal under the literal's inferred type.
fn round_trip(literal: &Literal) -> (Value, Literal) {
    let json = literal_to_json(literal, "x").expect("to JSON");
    let back = literal_from_json(&json, &infer_type(literal), "x").expect("from JSON");
    (json, back)
}

fn assert_round_trip(literal: Literal, expected_json: Value) {
    let (json, back) = round_trip(&literal);
    assert_eq!(json, expected_json);
    assert_eq!(back, literal, "JSON was {json}");
}

#[test]
fn primitives_round_trip_exactly() {
    assert_round_trip(
        primitive_literal(primitive::Value::Integer(i64::MIN)),
        json!(i64::MIN),
    );
    assert_round_trip(
        primitive_literal(primitive::Value::Integer(i64::MAX)),
        json!(i64::MAX),
    );
    assert_round_trip(
        primitive_literal(primitive::Value::FloatValue(-0.5)),
        json!(-0.5),
    );
    assert_round_trip(
        primitive_literal(primitive::Value::FloatValue(2.0)),
        json!(2.0),
    );
    assert_round_trip(
        primitive_literal(primitive::Value::FloatValue(f64::INFINITY)),
        json!("Infinity"),
    );
    assert_round_trip(
        primitive_literal(primitive::Value::FloatValue(f64::NEG_INFINITY)),
        json!("-Infinity"),
    );
    assert_round_trip(
        primitive_literal(primitive::Value::StringValue("日本語 ✓ \u{0}".into())),
        json!("日本語 ✓ \u{0}"),
    );
    assert_round_trip(
        primitive_literal(primitive::Value::Boolean(false)),
        json!(false),
    );
    assert_round_trip(
        scalar_literal(scalar::Value::NoneType(Void {})),
        Value::Null,
    );
}

#[test]
fn nan_survives_the_trip() {
    let (json, back) = round_trip(&primitive_literal(primitive::Value::FloatValue(f64::NAN)));
    assert_eq!(json, json!("NaN"));
    let Some(literal::Value::Scalar(s)) = back.value else {
        panic!("not a scalar")
    };
    let Some(scalar::Value::Primitive(Primitive {
        value: Some(primitive::Value::FloatValue(f)),
    })) = s.value
    else {
        panic!("not a float")
    };
    assert!(f.is_nan());
}

#[test]
fn datetimes_and_durations_use_rfc3339_and_proto3_strings() {
    let datetime = primitive_literal(primitive::Value::Datetime(pbjson_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 123_456_789,
    }));
    let (json, back) = round_trip(&datetime);
    assert_eq!(json, json!("2023-11-14T22:13:20.123456789+00:00"));
    assert_eq!(back, datetime);
    assert_round_trip(
        primitive_literal(primitive::Value::Duration(pbjson_types::Duration {
            seconds: 1,
            nanos: 500_000_000,
        })),
        json!("1.500s"),
    );
}

#[test]
fn nested_collections_and_maps_round_trip() {
    let empty_list = collection(vec![]);
    let empty_map = map(vec![]);
    assert_eq!(literal_to_json(&empty_list, "x").ok(), Some(json!([])));
    assert_eq!(literal_to_json(&empty_map, "x").ok(), Some(json!({})));
    assert_round_trip(
        map(vec![
            (
                "a",
                collection(vec![
                    primitive_literal(primitive::Value::Integer(1)),
                    primitive_literal(primitive::Value::Integer(2)),
                ]),
            ),
            (
                "b",
                collection(vec![primitive_literal(primitive::Value::Integer(3))]),
            ),
        ]),
        json!({"a": [1, 2], "b": [3]}),
    );
    let mut deep = primitive_literal(primitive::Value::StringValue("bottom".into()));
    for _ in 0..40 {
        deep = collection(vec![deep]);
    }
    let (_, back) = round_trip(&deep);
    assert_eq!(back, deep);
}

#[test]
fn large_strings_pass_unchanged() {
    let big = "x".repeat(1024 * 1024);
    assert_round_trip(
        primitive_literal(primitive::Value::StringValue(big.clone())),
        Value::String(big),
    );
}

#[test]
fn msgpack_binaries_are_decoded_and_re_encoded() {
    let value = json!({"name": "dc", "n": 3, "xs": [1.5, null], "inner": {"ok": true}});
    let literal = msgpack_of(&value);
    assert_eq!(infer_type(&literal), simple(SimpleType::Struct));
    let (json, back) = round_trip(&literal);
    assert_eq!(json, value);
    assert_eq!(literal_to_json(&back, "x").ok(), Some(value));
}

#[test]
fn other_binaries_are_tagged_base64() {
    assert_round_trip(
        scalar_literal(scalar::Value::Binary(Binary {
            value: vec![0, 1, 255],
            tag: "pickle".into(),
        })),
        json!({"tag": "pickle", "value": "AAH/"}),
    );
}

#[test]
fn files_directories_and_dataframes_keep_uri_and_format() {
    let dir = scalar_literal(scalar::Value::Blob(Blob {
        metadata: Some(BlobMetadata {
            r#type: Some(BlobType {
                format: "csv".into(),
                dimensionality: BlobDimensionality::Multipart as i32,
            }),
        }),
        uri: "s3://bucket/dir".into(),
    }));
    assert_round_trip(
        dir,
        json!({"uri": "s3://bucket/dir", "format": "csv", "dimensionality": "MULTIPART"}),
    );
    let frame = scalar_literal(scalar::Value::StructuredDataset(StructuredDataset {
        uri: "s3://bucket/frame".into(),
        metadata: Some(StructuredDatasetMetadata {
            structured_dataset_type: Some(StructuredDatasetType {
                format: "parquet".into(),
                ..Default::default()
            }),
        }),
    }));
    assert_round_trip(
        frame,
        json!({"uri": "s3://bucket/frame", "format": "parquet"}),
    );
}

#[test]
fn optional_values_pick_the_matching_union_variant() {
    let optional_int = LiteralType {
        r#type: Some(literal_type::Type::UnionType(UnionType {
            variants: vec![simple(SimpleType::Integer), simple(SimpleType::None)],
        })),
        ..Default::default()
    };
    let some = literal_from_json(&json!(7), &optional_int, "x").expect("7");
    let none = literal_from_json(&Value::Null, &optional_int, "x").expect("null");
    assert_eq!(literal_to_json(&some, "x").ok(), Some(json!(7)));
    assert_eq!(literal_to_json(&none, "x").ok(), Some(Value::Null));
    let variant = |l: &Literal| match &l.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Union(u)) => u.r#type.clone(),
            _ => None,
        },
        _ => None,
    };
    assert_eq!(variant(&some), Some(simple(SimpleType::Integer)));
    assert_eq!(variant(&none), Some(simple(SimpleType::None)));
    assert!(literal_from_json(&json!("text"), &optional_int, "x").is_err());
}

#[test]
fn untyped_outputs_follow_the_python_inference() {
    let literal = |v: Value| untyped_literal_from_json(&v, "out").expect("converts");
    assert_eq!(
        literal(json!(3)),
        primitive_literal(primitive::Value::Integer(3))
    );
    assert_eq!(
        literal(json!(3.0)),
        primitive_literal(primitive::Value::FloatValue(3.0))
    );
    assert_eq!(
        literal(json!("s")),
        primitive_literal(primitive::Value::StringValue("s".into()))
    );
    assert_eq!(
        literal(json!(true)),
        primitive_literal(primitive::Value::Boolean(true))
    );
    assert_eq!(
        literal(Value::Null),
        scalar_literal(scalar::Value::NoneType(Void {}))
    );
    assert_eq!(
        literal(json!([1, "a"])),
        collection(vec![
            primitive_literal(primitive::Value::Integer(1)),
            primitive_literal(primitive::Value::StringValue("a".into()))
        ])
    );
    assert_eq!(literal(json!({"k": 1})), msgpack_of(&json!({"k": 1})));
    assert!(untyped_literal_from_json(&json!(u64::MAX), "out").is_err());
}

#[test]
fn typed_outputs_reject_values_of_the_wrong_shape_naming_them() {
    let err = literal_from_json(&json!("3"), &simple(SimpleType::Integer), "output \"n\"")
        .expect_err("string");
    assert_eq!(err.path, "output \"n\"");
    let list_of_ints = LiteralType {
        r#type: Some(literal_type::Type::CollectionType(Box::new(simple(
            SimpleType::Integer,
        )))),
        ..Default::default()
    };
    let err = literal_from_json(&json!([1, 2.5]), &list_of_ints, "output \"xs\"")
        .expect_err("float in ints");
    assert_eq!(err.path, "output \"xs\"[1]");
}

#[test]
fn inputs_use_declared_types_and_report_bad_literals() {
    let inputs = crate::proto::task::Inputs {
        literals: vec![crate::proto::task::NamedLiteral {
            name: "broken".into(),
            value: Some(Literal::default()),
        }],
        ..Default::default()
    };
    let err = inputs_to_json(&inputs, None).expect_err("empty literal");
    assert_eq!(err.path, "input \"broken\"");
}

#[test]
fn cache_keys_of_files_and_dataframes_travel_with_them() {
    let mut file = scalar_literal(scalar::Value::Blob(Blob {
        metadata: Some(BlobMetadata {
            r#type: Some(BlobType {
                format: "csv".into(),
                dimensionality: BlobDimensionality::Single as i32,
            }),
        }),
        uri: "s3://bucket/f.csv".into(),
    }));
    file.hash = "sha256:5f2b".into();
    assert_round_trip(
        file,
        json!({"uri": "s3://bucket/f.csv", "format": "csv", "dimensionality": "SINGLE", "hash": "sha256:5f2b"}),
    );
    let mut frame = scalar_literal(scalar::Value::StructuredDataset(StructuredDataset {
        uri: "s3://bucket/t".into(),
        metadata: Some(StructuredDatasetMetadata {
            structured_dataset_type: Some(StructuredDatasetType {
                format: "parquet".into(),
                ..Default::default()
            }),
        }),
    }));
    frame.hash = "sha256:c0de".into();
    assert_round_trip(
        frame,
        json!({"uri": "s3://bucket/t", "format": "parquet", "hash": "sha256:c0de"}),
    );
}

#[test]
fn generic_structs_schemas_errors_and_offloaded_literals_are_shown_as_objects() {
    let generic = scalar_literal(scalar::Value::Generic(
        serde_json::from_value(json!({"a": 1.5, "b": [true, null], "c": {"d": "e"}}))
            .expect("struct"),
    ));
    assert_eq!(
        literal_to_json(&generic, "x").ok(),
        Some(json!({"a": 1.5, "b": [true, null], "c": {"d": "e"}}))
    );
    let error = scalar_literal(scalar::Value::Error(crate::proto::core::Error {
        failed_node_id: "n1".into(),
        message: "boom".into(),
    }));
    assert_round_trip(
        error,
        json!({"error": {"failed_node_id": "n1", "message": "boom"}}),
    );
    let schema = scalar_literal(scalar::Value::Schema(crate::proto::core::Schema {
        uri: "s3://bucket/schema".into(),
        r#type: Some(Default::default()),
    }));
    assert_round_trip(schema, json!({"uri": "s3://bucket/schema"}));
    let offloaded = Literal {
        value: Some(literal::Value::OffloadedMetadata(
            crate::proto::core::LiteralOffloadedMetadata {
                uri: "s3://bucket/big.pb".into(),
                size_bytes: 1 << 40,
                inferred_type: Some(simple(SimpleType::Integer)),
            },
        )),
        ..Default::default()
    };
    assert_eq!(
        literal_to_json(&offloaded, "x").ok(),
        Some(json!({"uri": "s3://bucket/big.pb", "size_bytes": 1u64 << 40}))
    );
    assert_eq!(infer_type(&offloaded), simple(SimpleType::Integer));
}
