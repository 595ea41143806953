//! Builders for the Flyte literals and task templates tests send.

use std::collections::BTreeMap;

use flyte_connect::proto::{
    connector::{CreateTaskRequest, TaskCategory},
    core::{
        Literal, LiteralCollection, LiteralMap, LiteralType, Primitive, Scalar, SimpleType,
        TaskTemplate, TypedInterface, Variable, VariableEntry, VariableMap, literal, literal_type,
        primitive, scalar,
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

/// Task category `name`, version 0.
pub fn category(name: &str) -> Option<TaskCategory> {
    Some(TaskCategory {
        name: name.to_owned(),
        version: 0,
    })
}
