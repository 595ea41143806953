//! Builders for the Flyte literals and task templates tests send.

use std::collections::BTreeMap;

use flyte_connect::proto::{
    connector::{CreateTaskRequest, TaskCategory},
    core::{
        Literal, LiteralCollection, LiteralMap, LiteralType, Primitive, RuntimeMetadata, Scalar,
        SimpleType, Sql, StructuredDatasetType, TaskMetadata, TaskTemplate, TypedInterface,
        Variable, VariableEntry, VariableMap, literal, literal_type, primitive, runtime_metadata,
        scalar, sql, task_template,
    },
    task::{Inputs, NamedLiteral},
};

fn primitive(value: primitive::Value) -> Literal {
    Literal {
        value: Some(literal::Value::Scalar(Box::new(Scalar {
            value: Some(scalar::Value::Primitive(Primitive { value: Some(value) })),
        }))),
        ..Default::default()
    }
}

/// An integer literal.
pub fn int(i: i64) -> Literal {
    primitive(primitive::Value::Integer(i))
}

/// A float literal.
pub fn float(f: f64) -> Literal {
    primitive(primitive::Value::FloatValue(f))
}

/// A string literal.
pub fn string(s: &str) -> Literal {
    primitive(primitive::Value::StringValue(s.to_owned()))
}

/// A boolean literal.
pub fn boolean(b: bool) -> Literal {
    primitive(primitive::Value::Boolean(b))
}

/// A datetime literal, `seconds` and `nanos` since the Unix epoch (UTC).
pub fn datetime(seconds: i64, nanos: i32) -> Literal {
    primitive(primitive::Value::Datetime(pbjson_types::Timestamp {
        seconds,
        nanos,
    }))
}

/// A collection literal.
pub fn list(items: Vec<Literal>) -> Literal {
    Literal {
        value: Some(literal::Value::Collection(LiteralCollection {
            literals: items,
        })),
        ..Default::default()
    }
}

/// A map literal.
pub fn map(entries: Vec<(&str, Literal)>) -> Literal {
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

/// A simple literal type.
pub fn simple(simple: SimpleType) -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::Simple(simple as i32)),
        ..Default::default()
    }
}

/// `list[item]`.
pub fn list_of(item: LiteralType) -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::CollectionType(Box::new(item))),
        ..Default::default()
    }
}

/// `dict[str, value]`.
pub fn map_of(value: LiteralType) -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::MapValueType(Box::new(value))),
        ..Default::default()
    }
}

/// Named inputs with their declared types.
pub struct TypedInputs(pub Vec<(&'static str, Literal, LiteralType)>);

impl TypedInputs {
    /// The `task.Inputs` message.
    pub fn inputs(&self) -> Inputs {
        Inputs {
            literals: self
                .0
                .iter()
                .map(|(name, value, _)| NamedLiteral {
                    name: (*name).to_owned(),
                    value: Some(value.clone()),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// An interface declaring these inputs.
    pub fn interface(&self) -> TypedInterface {
        TypedInterface {
            inputs: Some(VariableMap {
                variables: self
                    .0
                    .iter()
                    .map(|(name, _, literal_type)| VariableEntry {
                        key: (*name).to_owned(),
                        value: Some(Variable {
                            r#type: Some(literal_type.clone()),
                            ..Default::default()
                        }),
                    })
                    .collect(),
            }),
            outputs: None,
        }
    }
}

/// A template of task type `task_type` (version 0).
pub fn template(task_type: &str) -> TaskTemplate {
    TaskTemplate {
        r#type: task_type.to_owned(),
        ..Default::default()
    }
}

/// A CreateTask request for `task_type` with these inputs.
pub fn create_request(task_type: &str, inputs: &TypedInputs) -> CreateTaskRequest {
    CreateTaskRequest {
        inputs: Some(inputs.inputs()),
        template: Some(TaskTemplate {
            interface: Some(inputs.interface()),
            ..template(task_type)
        }),
        output_prefix: "s3://bucket/prefix".to_owned(),
        ..Default::default()
    }
}

/// The type of a Flyte `DataFrame` output, as `flyte` declares it.
pub fn dataframe_type() -> LiteralType {
    LiteralType {
        r#type: Some(literal_type::Type::StructuredDatasetType(
            StructuredDatasetType::default(),
        )),
        ..Default::default()
    }
}

/// A SQL task's CreateTask request, as Flyte's SQL task plugins make it:
/// `statement` in `sql`, `custom` as the plugin's `custom_config`, the
/// inputs declared and sent, `outputs` declared, and the SDK version in
/// `metadata.runtime`.
pub fn sql_task_request(
    task_type: &str,
    statement: &str,
    custom: serde_json::Value,
    inputs: &TypedInputs,
    outputs: &[(&str, LiteralType)],
) -> CreateTaskRequest {
    let mut interface = inputs.interface();
    interface.outputs = Some(VariableMap {
        variables: outputs
            .iter()
            .map(|(name, literal_type)| VariableEntry {
                key: (*name).to_owned(),
                value: Some(Variable {
                    r#type: Some(literal_type.clone()),
                    ..Default::default()
                }),
            })
            .collect(),
    });
    CreateTaskRequest {
        inputs: Some(inputs.inputs()),
        template: Some(TaskTemplate {
            interface: Some(interface),
            custom: serde_json::from_value(custom).ok(),
            target: Some(task_template::Target::Sql(Sql {
                statement: statement.to_owned(),
                dialect: sql::Dialect::Ansi as i32,
            })),
            metadata: Some(TaskMetadata {
                runtime: Some(RuntimeMetadata {
                    r#type: runtime_metadata::RuntimeType::FlyteSdk as i32,
                    version: "2.12.1".to_owned(),
                    flavor: "python".to_owned(),
                }),
                ..Default::default()
            }),
            ..template(task_type)
        }),
        output_prefix: "s3://bucket/prefix".to_owned(),
        ..Default::default()
    }
}

/// Task category `name`, version 0.
pub fn category(name: &str) -> Option<TaskCategory> {
    Some(TaskCategory {
        name: name.to_owned(),
        version: 0,
    })
}
