//! Echo connector: a task whose outputs are its inputs.
//!
//! `create` remembers the inputs and their literal types in the resource
//! meta; `get` succeeds at once and returns every input as an output of the
//! same literal type, so the client gets back exactly the literals it sent.
//! It also answers metrics and logs, which makes it the connector the
//! end-to-end tests and benchmarks run against.

use flyte_connector_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The echo connector.
pub struct Echo;

/// What `create` stores: the task's inputs and the type of each.
#[derive(Debug, Serialize, Deserialize)]
pub struct EchoMeta {
    /// Input name -> value (JSON).
    pub inputs: Map<String, Value>,
    /// Input name -> `flyteidl2.core.LiteralType` (proto3 JSON).
    pub input_types: Map<String, Value>,
}

impl Connector for Echo {
    type Meta = EchoMeta;

    fn metadata() -> Metadata {
        Metadata::new("Echo Connector").task_type("echo")
    }

    fn create(task: TaskRequest) -> Result<EchoMeta, Error> {
        Ok(EchoMeta {
            inputs: task.inputs()?,
            input_types: task.input_types().clone(),
        })
    }

    fn get(meta: EchoMeta, _ctx: &Context) -> Result<Resource, Error> {
        let count = meta.inputs.len();
        let mut input_types = meta.input_types;
        let mut outputs = Outputs::new();
        for (name, value) in meta.inputs {
            match input_types.remove(&name) {
                Some(literal_type) => {
                    outputs.insert_typed(name, value, literal_type);
                }
                None => {
                    outputs.insert(name, value)?;
                }
            }
        }
        Ok(Resource::succeeded()
            .message(format!("echoed {count} inputs"))
            .outputs(outputs))
    }

    fn delete(_meta: EchoMeta, _ctx: &Context) -> Result<(), Error> {
        Ok(())
    }

    fn get_metrics(meta: EchoMeta, query: MetricsQuery) -> Result<Vec<MetricResult>, Error> {
        let count = meta.inputs.len();
        query
            .queries
            .into_iter()
            .map(|metric| MetricResult::new(metric, json!({ "inputs": count })))
            .collect()
    }

    fn get_logs(meta: EchoMeta, query: LogsQuery) -> Result<LogsPage, Error> {
        let mut inputs: Vec<_> = meta.inputs.into_iter().collect();
        inputs.sort_by(|(a, _), (b, _)| a.cmp(b));
        let lines = inputs
            .into_iter()
            .take(query.limit().unwrap_or(usize::MAX))
            .map(|(name, value)| format!("{name}={value}"));
        Ok(LogsPage::new(lines))
    }
}

flyte_connector_sdk::export_connector!(Echo);

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EchoMeta {
        let task = TaskRequest::new(json!({"type": "echo"}))
            .with_input(
                "b",
                json!([1, 2]),
                json!({"collectionType": {"simple": "INTEGER"}}),
            )
            .with_input("a", json!("x"), json!({"simple": "STRING"}));
        Echo::create(task).expect("create")
    }

    #[test]
    fn echoes_inputs_with_their_types() {
        let resource = Echo::get(meta(), &Context::new(TaskCategory::new("echo"))).expect("get");
        assert_eq!(resource.phase, Phase::Succeeded);
        assert_eq!(resource.message, "echoed 2 inputs");
        let outputs = resource.outputs.expect("outputs");
        let b = outputs.get("b").expect("b");
        assert_eq!(b.value(), &json!([1, 2]));
        assert_eq!(
            b.literal_type(),
            Some(&json!({"collectionType": {"simple": "INTEGER"}}))
        );
    }

    #[test]
    fn logs_in_name_order_honouring_lines() {
        let page = Echo::get_logs(meta(), LogsQuery::default()).expect("logs");
        assert_eq!(page.lines, [r#"a="x""#, "b=[1,2]"]);
        assert_eq!(page.next_token, "");
        let query = LogsQuery {
            lines: 1,
            ..LogsQuery::default()
        };
        let page = Echo::get_logs(meta(), query).expect("logs");
        assert_eq!(page.lines, [r#"a="x""#]);
    }

    #[test]
    fn one_metric_per_query() {
        let query = MetricsQuery {
            queries: vec!["cpu".into(), "mem".into()],
            ..MetricsQuery::default()
        };
        let metrics = Echo::get_metrics(meta(), query).expect("metrics");
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[1].metric, "mem");
        assert_eq!(metrics[1].data["inputs"], 2);
    }
}
