//! What a connector receives: the task to start, and the context of later calls.

use std::any::type_name;
use std::collections::BTreeMap;

use serde::Deserialize as _;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Error, TaskCategory};

/// The connection a task runs with: the `secrets` and `configs` of the
/// request's `connection`, merged into one map (configs win on a clash).
/// Its `Debug` output shows the keys, never the values.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Connection {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.values.keys().map(|key| (key, "<redacted>")))
            .finish()
    }
}

impl Connection {
    /// A connection with no values.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if the connection has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `key`, or [`Error::InvalidRequest`] naming the missing
    /// key: the request cannot be served without it.
    pub fn secret(&self, key: &str) -> Result<&str, Error> {
        self.get(key).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "the connection has no `{key}`: set it in the connection's secrets or configs"
            ))
        })
    }

    /// Whether the connection has `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// All keys and values, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many values the connection has.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the connection has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sets `key` to `value` (replacing an earlier value).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Connection {
    /// Later pairs win over earlier ones with the same key.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            values: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// The task to start: what [`crate::Connector::create`] receives.
///
/// Inputs, input types, template and execution metadata arrive as JSON; the
/// accessors read them as the connector's own serde types. A value that
/// cannot be read that way is [`Error::InvalidRequest`], naming what failed.
///
/// For tests, build one with [`TaskRequest::new`] and the `with_` methods.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    inputs: Value,
    input_types: Map<String, Value>,
    template: Value,
    output_prefix: String,
    execution_metadata: Value,
    connection: Connection,
}

impl TaskRequest {
    /// A request for the task described by `template` (a
    /// `flyteidl2.core.TaskTemplate` as proto3 JSON), with no inputs, no
    /// output prefix, empty execution metadata and no connection.
    ///
    /// ```
    /// use flyte_connector_sdk::TaskRequest;
    /// use serde_json::json;
    ///
    /// let task = TaskRequest::new(json!({"type": "echo"}))
    ///     .with_input("x", json!(1), json!({"simple": "INTEGER"}))
    ///     .with_connection("token", "secret");
    /// assert_eq!(task.task_type(), "echo");
    /// assert_eq!(task.input::<i64>("x").unwrap(), 1);
    /// ```
    pub fn new(template: Value) -> Self {
        Self {
            inputs: Value::Object(Map::new()),
            input_types: Map::new(),
            template,
            output_prefix: String::new(),
            execution_metadata: Value::Object(Map::new()),
            connection: Connection::new(),
        }
    }

    /// Adds an input with its `flyteidl2.core.LiteralType` (proto3 JSON).
    pub fn with_input(
        mut self,
        name: impl Into<String>,
        value: Value,
        literal_type: Value,
    ) -> Self {
        let name = name.into();
        if let Value::Object(inputs) = &mut self.inputs {
            inputs.insert(name.clone(), value);
        }
        self.input_types.insert(name, literal_type);
        self
    }

    /// Sets the output prefix.
    pub fn with_output_prefix(mut self, output_prefix: impl Into<String>) -> Self {
        self.output_prefix = output_prefix.into();
        self
    }

    /// Sets the task execution metadata (proto3 JSON).
    pub fn with_execution_metadata(mut self, metadata: Value) -> Self {
        self.execution_metadata = metadata;
        self
    }

    /// Adds a connection value.
    pub fn with_connection(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.connection.insert(key, value);
        self
    }

    /// Reads the request the host sent; every JSON field must parse, and
    /// inputs and input types must be objects.
    pub(crate) fn from_parts(
        inputs: &str,
        input_types: &str,
        template: &str,
        output_prefix: String,
        execution_metadata: &str,
        connection: Connection,
    ) -> Result<Self, Error> {
        let inputs = match parse_json(inputs, "task inputs")? {
            inputs @ Value::Object(_) => inputs,
            other => {
                return Err(Error::InvalidRequest(format!(
                    "the task inputs must be a JSON object, got {}",
                    kind(&other)
                )));
            }
        };
        let input_types = match parse_json(input_types, "input types")? {
            Value::Object(types) => types,
            other => {
                return Err(Error::InvalidRequest(format!(
                    "the input types must be a JSON object, got {}",
                    kind(&other)
                )));
            }
        };
        Ok(Self {
            inputs,
            input_types,
            template: parse_json(template, "task template")?,
            output_prefix,
            execution_metadata: parse_json(execution_metadata, "task execution metadata")?,
            connection,
        })
    }

    /// All inputs read as the connector's type, usually a struct whose fields
    /// are the input names.
    ///
    /// ```
    /// # use flyte_connector_sdk::TaskRequest;
    /// # use serde_json::json;
    /// #[derive(serde::Deserialize)]
    /// struct Inputs {
    ///     query: String,
    ///     limit: Option<u32>,
    /// }
    ///
    /// let task = TaskRequest::new(json!({}))
    ///     .with_input("query", json!("SELECT 1"), json!({"simple": "STRING"}));
    /// let inputs: Inputs = task.inputs().unwrap();
    /// assert_eq!(inputs.query, "SELECT 1");
    /// assert_eq!(inputs.limit, None);
    /// ```
    pub fn inputs<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(&self.inputs).map_err(|e| {
            Error::InvalidRequest(format!(
                "cannot read the task inputs as {}: {e}",
                type_name::<T>()
            ))
        })
    }

    /// One input read as `T`. A missing input reads as JSON `null`, so an
    /// `Option<T>` is `None` for it; any other type reports it missing.
    pub fn input<T: DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        match self.inputs.get(name) {
            Some(value) => T::deserialize(value).map_err(|e| {
                Error::InvalidRequest(format!(
                    "cannot read input `{name}` as {}: {e}",
                    type_name::<T>()
                ))
            }),
            None => T::deserialize(&Value::Null)
                .map_err(|_| Error::InvalidRequest(format!("the task has no input `{name}`"))),
        }
    }

    /// The inputs as a JSON object: input name -> value.
    pub fn inputs_json(&self) -> &Value {
        &self.inputs
    }

    /// The type of each input: input name -> `flyteidl2.core.LiteralType`
    /// as proto3 JSON (e.g. `{"simple": "INTEGER"}`). Taken from the task's
    /// interface where it declares the input, else inferred by the host.
    pub fn input_types(&self) -> &Map<String, Value> {
        &self.input_types
    }

    /// The type of each output the task's interface declares: output name ->
    /// `flyteidl2.core.LiteralType` as proto3 JSON. Keep the ones you need in
    /// your meta and pass them to [`Outputs::insert_typed`](crate::Outputs::insert_typed)
    /// in `get`, so each output comes back exactly as declared.
    pub fn output_types(&self) -> Map<String, Value> {
        self.template
            .pointer("/interface/outputs/variables")
            .and_then(Value::as_array)
            .map(|variables| {
                variables
                    .iter()
                    .filter_map(|entry| {
                        let name = entry.get("key")?.as_str()?;
                        let literal_type = entry.pointer("/value/type")?;
                        Some((name.to_owned(), literal_type.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The task template (`flyteidl2.core.TaskTemplate`) as proto3 JSON,
    /// with every field the client set: `custom`, `config`, `sql`,
    /// `container`, `metadata`, `interface`, ...
    pub fn template(&self) -> &Value {
        &self.template
    }

    /// The template's `custom` field (the task plugin's settings) read as
    /// the connector's type. A template without `custom` reads as `null`.
    pub fn custom<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match self.template.get("custom") {
            Some(custom) => T::deserialize(custom).map_err(|e| {
                Error::InvalidRequest(format!(
                    "cannot read the task template's custom field as {}: {e}",
                    type_name::<T>()
                ))
            }),
            None => T::deserialize(&Value::Null).map_err(|_| {
                Error::InvalidRequest("the task template has no custom field".to_owned())
            }),
        }
    }

    /// The template's `config` map (empty when the template has none).
    pub fn config(&self) -> Result<BTreeMap<String, String>, Error> {
        match self.template.get("config") {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(config) => BTreeMap::deserialize(config).map_err(|e| {
                Error::InvalidRequest(format!(
                    "the task template's config is not a map of strings: {e}"
                ))
            }),
        }
    }

    /// One value of the template's `config` map.
    pub fn config_value(&self, key: &str) -> Option<&str> {
        self.template.get("config")?.get(key)?.as_str()
    }

    /// The SQL statement of the template (`sql.statement`), if it has one.
    pub fn sql(&self) -> Option<&str> {
        self.template.get("sql")?.get("statement")?.as_str()
    }

    /// The task type (the template's `type`), e.g. `"echo"`; empty if unset.
    pub fn task_type(&self) -> &str {
        self.template
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The task type and version (the template's `type` and
    /// `taskTypeVersion`, 0 if unset).
    pub fn task_category(&self) -> TaskCategory {
        let version = self
            .template
            .get("taskTypeVersion")
            .or_else(|| self.template.get("task_type_version"))
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(0);
        TaskCategory::with_version(self.task_type(), version)
    }

    /// Where the task should write its outputs (a blob-store prefix).
    pub fn output_prefix(&self) -> &str {
        &self.output_prefix
    }

    /// The task execution metadata
    /// (`flyteidl2.connector.TaskExecutionMetadata`) as proto3 JSON; `{}`
    /// when the client sent none.
    pub fn execution_metadata(&self) -> &Value {
        &self.execution_metadata
    }

    /// The connection: secrets and configs merged into one map.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A connection value the request cannot be served without; see
    /// [`Connection::secret`].
    pub fn secret(&self, key: &str) -> Result<&str, Error> {
        self.connection.secret(key)
    }
}

/// What `get` and `delete` receive besides the resource meta.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    task_category: TaskCategory,
    output_prefix: String,
    connection: Connection,
}

impl Context {
    /// A context for a task of this category, with no output prefix and no
    /// connection (for tests).
    pub fn new(task_category: TaskCategory) -> Self {
        Self {
            task_category,
            ..Self::default()
        }
    }

    /// Sets the output prefix.
    pub fn with_output_prefix(mut self, output_prefix: impl Into<String>) -> Self {
        self.output_prefix = output_prefix.into();
        self
    }

    /// Adds a connection value.
    pub fn with_connection(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.connection.insert(key, value);
        self
    }

    pub(crate) fn from_parts(
        task_category: TaskCategory,
        output_prefix: String,
        connection: Connection,
    ) -> Self {
        Self {
            task_category,
            output_prefix,
            connection,
        }
    }

    /// The task type and version of the task.
    pub fn task_category(&self) -> &TaskCategory {
        &self.task_category
    }

    /// The task type of the task.
    pub fn task_type(&self) -> &str {
        &self.task_category.name
    }

    /// Where the task writes its outputs (empty in `delete`).
    pub fn output_prefix(&self) -> &str {
        &self.output_prefix
    }

    /// The connection: secrets and configs merged into one map.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A connection value the call cannot be served without; see
    /// [`Connection::secret`].
    pub fn secret(&self, key: &str) -> Result<&str, Error> {
        self.connection.secret(key)
    }
}

/// What [`crate::Connector::get_metrics`] receives besides the resource meta.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsQuery {
    /// The task type and version of the task.
    pub task_category: TaskCategory,
    /// The metrics asked for; answer with one result per query.
    pub queries: Vec<String>,
    /// Start of the range, RFC 3339, when given.
    pub start_time: Option<String>,
    /// End of the range, RFC 3339, when given.
    pub end_time: Option<String>,
    /// Resolution, a proto3 duration string such as `"60s"`, when given.
    pub step: Option<String>,
    /// The connection: the gRPC request carries none, so it holds what the
    /// host fills in from the pod (the manifest's `[credentials]`).
    pub connection: Connection,
}

/// What [`crate::Connector::get_logs`] receives besides the resource meta.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogsQuery {
    /// The task type and version of the task.
    pub task_category: TaskCategory,
    /// How many lines to return at most; 0 lets the connector decide.
    pub lines: u64,
    /// The page to read: empty for the first page, else the `next_token` of
    /// the previous page.
    pub token: String,
    /// The connection: the gRPC request carries none, so it holds what the
    /// host fills in from the pod (the manifest's `[credentials]`).
    pub connection: Connection,
}

impl LogsQuery {
    /// The most lines to return, or `None` when the caller set no limit.
    pub fn limit(&self) -> Option<usize> {
        match self.lines {
            0 => None,
            lines => Some(usize::try_from(lines).unwrap_or(usize::MAX)),
        }
    }
}

fn parse_json(text: &str, what: &str) -> Result<Value, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::InvalidRequest(format!("cannot parse the {what} as JSON: {e}")))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn request() -> TaskRequest {
        TaskRequest::from_parts(
            r#"{"a": 1, "b": [1.5, 2.5], "name": "x"}"#,
            r#"{"a": {"simple": "INTEGER"}}"#,
            r#"{"type": "sql_task", "taskTypeVersion": 2,
                "custom": {"warehouse": "w1", "retries": 3},
                "config": {"region": "eu"},
                "sql": {"statement": "SELECT 1", "dialect": "ANSI"}}"#,
            "s3://bucket/out".into(),
            r#"{"namespace": "dev"}"#,
            [("token", "t0"), ("region", "us")].into_iter().collect(),
        )
        .unwrap()
    }

    #[test]
    fn output_types_come_from_the_interface() {
        let task = TaskRequest::from_parts(
            "{}",
            "{}",
            r#"{"type": "t", "interface": {"outputs": {"variables": [
                {"key": "rows", "value": {"type": {"simple": "INTEGER"}}},
                {"key": "weights", "value": {"type": {"mapValueType": {"simple": "FLOAT"}}}}
            ]}}}"#,
            String::new(),
            "{}",
            Connection::new(),
        )
        .unwrap();
        let types = task.output_types();
        assert_eq!(types["rows"], json!({"simple": "INTEGER"}));
        assert_eq!(
            types["weights"],
            json!({"mapValueType": {"simple": "FLOAT"}})
        );
        assert!(request().output_types().is_empty());
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inputs {
        a: i64,
        b: Vec<f64>,
        name: String,
        missing: Option<bool>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Custom {
        warehouse: String,
        retries: u8,
    }

    #[test]
    fn typed_access() {
        let task = request();
        assert_eq!(
            task.inputs::<Inputs>().unwrap(),
            Inputs {
                a: 1,
                b: vec![1.5, 2.5],
                name: "x".into(),
                missing: None
            }
        );
        assert_eq!(task.input::<i64>("a").unwrap(), 1);
        assert_eq!(task.input::<Option<i64>>("nope").unwrap(), None);
        assert_eq!(task.inputs_json()["name"], "x");
        assert_eq!(task.input_types()["a"], json!({"simple": "INTEGER"}));
        assert_eq!(
            task.custom::<Custom>().unwrap(),
            Custom {
                warehouse: "w1".into(),
                retries: 3
            }
        );
        assert_eq!(task.config().unwrap()["region"], "eu");
        assert_eq!(task.config_value("region"), Some("eu"));
        assert_eq!(task.sql(), Some("SELECT 1"));
        assert_eq!(task.task_type(), "sql_task");
        assert_eq!(
            task.task_category(),
            TaskCategory::with_version("sql_task", 2)
        );
        assert_eq!(task.output_prefix(), "s3://bucket/out");
        assert_eq!(task.execution_metadata()["namespace"], "dev");
        assert_eq!(task.secret("token"), Ok("t0"));
        assert_eq!(task.connection().get("region"), Some("us"));
        assert_eq!(task.connection().len(), 2);
    }

    #[test]
    fn failures_name_what_failed() {
        let task = request();
        let Err(Error::InvalidRequest(message)) = task.input::<String>("a") else {
            panic!("expected invalid request");
        };
        assert!(message.contains("input `a`"), "{message}");
        let Err(Error::InvalidRequest(message)) = task.input::<i64>("nope") else {
            panic!("expected invalid request");
        };
        assert_eq!(message, "the task has no input `nope`");
        let Err(Error::InvalidRequest(message)) = task.inputs::<Custom>() else {
            panic!("expected invalid request");
        };
        assert!(message.contains("task inputs"), "{message}");
        assert!(message.contains("Custom"), "{message}");
        let Err(Error::InvalidRequest(message)) = task.secret("password") else {
            panic!("expected invalid request");
        };
        assert!(message.contains("`password`"), "{message}");

        let bare = TaskRequest::new(json!({"type": "t"}));
        assert_eq!(bare.custom::<Option<Custom>>().unwrap(), None);
        assert_eq!(
            bare.custom::<Custom>(),
            Err(Error::InvalidRequest(
                "the task template has no custom field".into()
            ))
        );
        assert!(bare.config().unwrap().is_empty());
        assert_eq!(bare.sql(), None);
        assert_eq!(bare.task_category(), TaskCategory::new("t"));
    }

    #[test]
    fn malformed_requests() {
        let err = |inputs: &str, types: &str, template: &str| {
            TaskRequest::from_parts(
                inputs,
                types,
                template,
                String::new(),
                "{}",
                Connection::new(),
            )
            .unwrap_err()
        };
        assert_eq!(
            err("[1]", "{}", "{}"),
            Error::InvalidRequest("the task inputs must be a JSON object, got an array".into())
        );
        assert!(
            matches!(err("{", "{}", "{}"), Error::InvalidRequest(m) if m.contains("task inputs"))
        );
        assert!(
            matches!(err("{}", "1", "{}"), Error::InvalidRequest(m) if m.contains("input types"))
        );
        assert!(
            matches!(err("{}", "{}", ""), Error::InvalidRequest(m) if m.contains("task template"))
        );
    }

    #[test]
    fn debug_output_never_shows_connection_values() {
        let task = request().with_connection("api_token", "s3cr3t-value");
        let shown = format!("{task:?}");
        assert!(shown.contains("api_token"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn logs_limit() {
        let query = LogsQuery::default();
        assert_eq!(query.limit(), None);
        let query = LogsQuery {
            lines: 3,
            ..LogsQuery::default()
        };
        assert_eq!(query.limit(), Some(3));
    }
}
