//! What a connector answers: the resource, its outputs, metrics and logs.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::time::format_duration;
use crate::{Error, Phase, Rfc3339};

/// One output value, with the literal type the host should build from it
/// (or none, to let the host infer it from the JSON).
///
/// Build it with one of the typed constructors ([`Output::file`],
/// [`Output::directory`], [`Output::dataframe`], [`Output::datetime`],
/// [`Output::duration`], [`Output::typed`]) or from any serializable value
/// ([`Output::new`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    value: Value,
    literal_type: Option<Value>,
}

impl Output {
    /// A value whose literal the host infers as the Python server does:
    /// integer, float, string, boolean, none for `null`, collection for an
    /// array, and a msgpack binary (a Python `dict`) for an object.
    ///
    /// Fails with [`Error::Failed`] if the value cannot be written as JSON
    /// (say, a map with non-string keys).
    pub fn new(value: impl Serialize) -> Result<Self, Error> {
        let value = serde_json::to_value(value)
            .map_err(|e| Error::Failed(format!("cannot encode the output as JSON: {e}")))?;
        Ok(Self::inferred(value))
    }

    /// A JSON value whose literal the host infers (see [`Output::new`]).
    pub fn inferred(value: Value) -> Self {
        Self {
            value,
            literal_type: None,
        }
    }

    /// A value with an explicit `flyteidl2.core.LiteralType` in proto3 JSON,
    /// e.g. `{"simple": "INTEGER"}`, `{"collectionType": {"simple": "FLOAT"}}`
    /// or `{"mapValueType": {"simple": "STRING"}}`. The host builds exactly
    /// that literal.
    pub fn typed(value: Value, literal_type: Value) -> Self {
        Self {
            value,
            literal_type: Some(literal_type),
        }
    }

    /// A single file (Flyte `File`, a blob of dimensionality `SINGLE`) at
    /// `uri`; `format` may be empty.
    pub fn file(uri: impl Into<String>, format: impl Into<String>) -> Self {
        Self::blob(uri.into(), format.into(), "SINGLE")
    }

    /// A directory (Flyte `Dir`, a blob of dimensionality `MULTIPART`) at
    /// `uri`; `format` may be empty.
    pub fn directory(uri: impl Into<String>, format: impl Into<String>) -> Self {
        Self::blob(uri.into(), format.into(), "MULTIPART")
    }

    fn blob(uri: String, format: String, dimensionality: &str) -> Self {
        Self::typed(
            json!({"uri": uri, "format": format, "dimensionality": dimensionality}),
            json!({"blob": {"format": format, "dimensionality": dimensionality}}),
        )
    }

    /// A dataframe (Flyte `DataFrame`, a structured dataset) stored at
    /// `uri` in `format`, e.g. `"parquet"`.
    pub fn dataframe(uri: impl Into<String>, format: impl Into<String>) -> Self {
        let format = format.into();
        Self::typed(
            json!({"uri": uri.into(), "format": format}),
            json!({"structuredDatasetType": {"format": format}}),
        )
    }

    /// A datetime, from an RFC 3339 string or a [`std::time::SystemTime`].
    pub fn datetime(time: impl Rfc3339) -> Self {
        Self::typed(
            Value::String(time.to_rfc3339()),
            json!({"simple": "DATETIME"}),
        )
    }

    /// A duration, written as a proto3 duration string such as `"1.5s"`.
    pub fn duration(duration: Duration) -> Self {
        Self::typed(
            Value::String(format_duration(duration)),
            json!({"simple": "DURATION"}),
        )
    }

    /// The value as JSON.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The literal type (proto3 JSON), if stated.
    pub fn literal_type(&self) -> Option<&Value> {
        self.literal_type.as_ref()
    }
}

/// A task's outputs by name: what the host turns into the output literal map.
///
/// ```
/// use flyte_connector_sdk::{Output, Outputs};
/// use serde_json::json;
///
/// # fn main() -> Result<(), flyte_connector_sdk::Error> {
/// let mut outputs = Outputs::new();
/// outputs
///     .insert("rows", 42)?
///     .insert("names", vec!["a", "b"])?;
/// outputs.insert_typed("ratio", json!(0.5), json!({"simple": "FLOAT"}));
/// outputs.insert_output("report", Output::file("s3://bucket/report.csv", "csv"));
/// assert_eq!(outputs.len(), 4);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outputs {
    /// In insertion order, which is the order the client sees them in.
    outputs: Vec<(String, Output)>,
}

impl Outputs {
    /// No outputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an output whose literal the host infers from its JSON (see
    /// [`Output::new`]); replaces an output of the same name.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        value: impl Serialize,
    ) -> Result<&mut Self, Error> {
        let name = name.into();
        let value = serde_json::to_value(value)
            .map_err(|e| Error::Failed(format!("cannot encode output `{name}` as JSON: {e}")))?;
        Ok(self.insert_output(name, Output::inferred(value)))
    }

    /// Adds an output with an explicit literal type (see [`Output::typed`]).
    pub fn insert_typed(
        &mut self,
        name: impl Into<String>,
        value: Value,
        literal_type: Value,
    ) -> &mut Self {
        self.insert_output(name, Output::typed(value, literal_type))
    }

    /// Adds an output built with one of [`Output`]'s constructors; replaces
    /// an output of the same name in its place.
    pub fn insert_output(&mut self, name: impl Into<String>, output: Output) -> &mut Self {
        let name = name.into();
        match self
            .outputs
            .iter_mut()
            .find(|(existing, _)| *existing == name)
        {
            Some((_, slot)) => *slot = output,
            None => self.outputs.push((name, output)),
        }
        self
    }

    /// The output called `name`.
    pub fn get(&self, name: &str) -> Option<&Output> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, output)| output)
    }

    /// Removes and returns the output called `name`.
    pub fn remove(&mut self, name: &str) -> Option<Output> {
        let index = self.outputs.iter().position(|(n, _)| n == name)?;
        Some(self.outputs.remove(index).1)
    }

    /// The outputs, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Output)> {
        self.outputs
            .iter()
            .map(|(name, output)| (name.as_str(), output))
    }

    /// How many outputs there are.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    /// Whether there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }
}

impl<K: Into<String>> FromIterator<(K, Output)> for Outputs {
    fn from_iter<I: IntoIterator<Item = (K, Output)>>(iter: I) -> Self {
        let mut outputs = Self::new();
        for (name, output) in iter {
            outputs.insert_output(name, output);
        }
        outputs
    }
}

impl IntoIterator for Outputs {
    type Item = (String, Output);
    type IntoIter = std::vec::IntoIter<(String, Output)>;

    fn into_iter(self) -> Self::IntoIter {
        self.outputs.into_iter()
    }
}

/// A link shown next to the task in the Flyte UI (`flyteidl2.core.TaskLog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLog {
    /// The link's label, e.g. `"BigQuery Console"`.
    pub name: String,
    /// Where it points.
    pub uri: String,
    /// Whether the link works yet.
    pub ready: bool,
    /// An icon for the link.
    pub icon_uri: String,
    /// Show the link while the task is still pending.
    pub show_while_pending: bool,
    /// Hide the link once the task has finished.
    pub hide_once_finished: bool,
    /// What the link opens; an external log viewer unless set.
    pub link_type: LinkType,
}

/// What a log link opens (`flyteidl2.core.TaskLog.LinkType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkType {
    /// An external log viewer.
    #[default]
    External,
    /// A dashboard of the running workload (a console showing the job).
    Dashboard,
    /// An interactive development environment.
    Ide,
}

impl TaskLog {
    /// A link that is ready, with no icon, shown once the task runs and kept
    /// after it finishes.
    pub fn new(name: impl Into<String>, uri: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            uri: uri.into(),
            ready: true,
            icon_uri: String::new(),
            show_while_pending: false,
            hide_once_finished: false,
            link_type: LinkType::External,
        }
    }

    /// Sets what the link opens, e.g. [`LinkType::Dashboard`] for a
    /// service's console showing the job (as Flyte's BigQuery and Snowflake
    /// connectors mark theirs).
    pub fn link_type(mut self, link_type: LinkType) -> Self {
        self.link_type = link_type;
        self
    }

    /// Sets whether the link works yet.
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }

    /// Sets the link's icon.
    pub fn icon_uri(mut self, icon_uri: impl Into<String>) -> Self {
        self.icon_uri = icon_uri.into();
        self
    }

    /// Sets whether to show the link while the task is pending.
    pub fn show_while_pending(mut self, show: bool) -> Self {
        self.show_while_pending = show;
        self
    }

    /// Sets whether to hide the link once the task has finished.
    pub fn hide_once_finished(mut self, hide: bool) -> Self {
        self.hide_once_finished = hide;
        self
    }
}

/// The state of a task on the external service: what
/// [`crate::Connector::get`] returns.
///
/// ```
/// use flyte_connector_sdk::{Outputs, Phase, Resource, TaskLog};
/// use serde_json::json;
///
/// # fn main() -> Result<(), flyte_connector_sdk::Error> {
/// let mut outputs = Outputs::new();
/// outputs.insert("rows", 42)?;
/// let resource = Resource::new(Phase::Succeeded)
///     .message("job finished")
///     .log_link(TaskLog::new("Console", "https://console.example.com/job/1"))
///     .outputs(outputs)
///     .custom_info(json!({"job_id": "1"}))?;
/// assert_eq!(resource.phase, Phase::Succeeded);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    /// The task's phase.
    pub phase: Phase,
    /// A short human-readable status.
    pub message: String,
    /// Links shown next to the task in the UI.
    pub log_links: Vec<TaskLog>,
    /// The task's outputs, once it has produced them.
    pub outputs: Option<Outputs>,
    /// Extra information for the client, surfaced as a
    /// `google.protobuf.Struct`.
    pub custom_info: Option<Map<String, Value>>,
}

impl Resource {
    /// A resource in this phase, with no message, links, outputs or custom info.
    pub fn new(phase: Phase) -> Self {
        Self {
            phase,
            ..Self::default()
        }
    }

    /// A resource that has succeeded (add outputs with [`Resource::outputs`]).
    pub fn succeeded() -> Self {
        Self::new(Phase::Succeeded)
    }

    /// A resource that is running.
    pub fn running() -> Self {
        Self::new(Phase::Running)
    }

    /// A resource that has failed, with a message saying why.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Phase::Failed).message(message)
    }

    /// Sets the message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Adds a log link.
    pub fn log_link(mut self, link: TaskLog) -> Self {
        self.log_links.push(link);
        self
    }

    /// Adds log links.
    pub fn log_links(mut self, links: impl IntoIterator<Item = TaskLog>) -> Self {
        self.log_links.extend(links);
        self
    }

    /// Sets the outputs.
    pub fn outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = Some(outputs);
        self
    }

    /// Sets the custom info from anything that serializes to a JSON object
    /// (a struct, a map, `json!({...})`); anything else is [`Error::Failed`].
    pub fn custom_info(mut self, custom_info: impl Serialize) -> Result<Self, Error> {
        self.custom_info = Some(to_object(custom_info, "the custom info")?);
        Ok(self)
    }
}

/// One metric series (`flyteidl2.core.ExecutionMetricResult`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    /// The metric, usually the query it answers.
    pub metric: String,
    /// The series, as a JSON object.
    pub data: Map<String, Value>,
}

impl MetricResult {
    /// A metric with data from anything that serializes to a JSON object;
    /// anything else is [`Error::Failed`].
    pub fn new(metric: impl Into<String>, data: impl Serialize) -> Result<Self, Error> {
        let metric = metric.into();
        let data = to_object(data, &format!("the data of metric `{metric}`"))?;
        Ok(Self { metric, data })
    }
}

/// A page of a task's logs: what [`crate::Connector::get_logs`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogsPage {
    /// The log lines.
    pub lines: Vec<String>,
    /// The token of the next page; empty when this is the last page.
    pub next_token: String,
}

impl LogsPage {
    /// The last page, with these lines.
    pub fn new(lines: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            lines: lines.into_iter().map(Into::into).collect(),
            next_token: String::new(),
        }
    }

    /// Sets the token of the next page.
    pub fn next_token(mut self, token: impl Into<String>) -> Self {
        self.next_token = token.into();
        self
    }
}

fn to_object(value: impl Serialize, what: &str) -> Result<Map<String, Value>, Error> {
    match serde_json::to_value(value) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(Error::Failed(format!(
            "{what} must be a JSON object, not {other}"
        ))),
        Err(e) => Err(Error::Failed(format!("cannot encode {what} as JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn typed_constructors() {
        let file = Output::file("s3://b/f.csv", "csv");
        assert_eq!(
            file.value(),
            &json!({"uri": "s3://b/f.csv", "format": "csv", "dimensionality": "SINGLE"})
        );
        assert_eq!(
            file.literal_type(),
            Some(&json!({"blob": {"format": "csv", "dimensionality": "SINGLE"}}))
        );

        let dir = Output::directory("s3://b/d", "");
        assert_eq!(
            dir.value(),
            &json!({"uri": "s3://b/d", "format": "", "dimensionality": "MULTIPART"})
        );
        assert_eq!(
            dir.literal_type(),
            Some(&json!({"blob": {"format": "", "dimensionality": "MULTIPART"}}))
        );

        let df = Output::dataframe("s3://b/df", "parquet");
        assert_eq!(
            df.value(),
            &json!({"uri": "s3://b/df", "format": "parquet"})
        );
        assert_eq!(
            df.literal_type(),
            Some(&json!({"structuredDatasetType": {"format": "parquet"}}))
        );

        let dt = Output::datetime("2024-05-01T12:30:00Z");
        assert_eq!(dt.value(), &json!("2024-05-01T12:30:00Z"));
        assert_eq!(dt.literal_type(), Some(&json!({"simple": "DATETIME"})));
        let dt = Output::datetime(UNIX_EPOCH + Duration::from_secs(86_400));
        assert_eq!(dt.value(), &json!("1970-01-02T00:00:00Z"));
        let owned = String::from("2024-05-01T12:30:00+02:00");
        assert_eq!(Output::datetime(&owned).value(), &json!(owned));

        let d = Output::duration(Duration::from_millis(1500));
        assert_eq!(d.value(), &json!("1.5s"));
        assert_eq!(d.literal_type(), Some(&json!({"simple": "DURATION"})));
    }

    #[test]
    fn outputs_builder() {
        let mut outputs = Outputs::new();
        outputs
            .insert("i", 1)
            .unwrap()
            .insert("f", 1.5)
            .unwrap()
            .insert("s", "x")
            .unwrap()
            .insert("none", None::<i32>)
            .unwrap()
            .insert("list", [1, 2])
            .unwrap();
        outputs.insert_typed("t", json!(2), json!({"simple": "INTEGER"}));
        outputs.insert_output("file", Output::file("u", "f"));
        assert_eq!(outputs.len(), 7);
        assert_eq!(outputs.get("i").unwrap().value(), &json!(1));
        assert_eq!(outputs.get("i").unwrap().literal_type(), None);
        assert_eq!(outputs.get("none").unwrap().value(), &Value::Null);
        assert_eq!(
            outputs.get("t").unwrap().literal_type(),
            Some(&json!({"simple": "INTEGER"}))
        );
        let names: Vec<_> = outputs.iter().map(|(name, _)| name).collect();
        assert_eq!(
            names,
            ["i", "f", "s", "none", "list", "t", "file"],
            "insertion order"
        );

        outputs.insert("i", "replaced").unwrap();
        assert_eq!(outputs.len(), 7);
        assert_eq!(outputs.get("i").unwrap().value(), &json!("replaced"));

        let bad: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
        let Err(Error::Failed(message)) = outputs.insert("bad", bad) else {
            panic!("expected failure");
        };
        assert!(message.contains("output `bad`"), "{message}");
    }

    #[test]
    fn resource_builder() {
        let resource = Resource::running()
            .message("working")
            .log_link(TaskLog::new("console", "https://x").icon_uri("i"))
            .custom_info(json!({"a": 1}))
            .unwrap();
        assert_eq!(resource.phase, Phase::Running);
        assert_eq!(resource.message, "working");
        assert!(resource.log_links[0].ready);
        assert_eq!(resource.custom_info.unwrap()["a"], 1);
        assert!(resource.outputs.is_none());

        assert!(matches!(
            Resource::succeeded().custom_info([1, 2]),
            Err(Error::Failed(m)) if m.contains("must be a JSON object")
        ));
        assert_eq!(Resource::failed("no").phase, Phase::Failed);
    }

    #[test]
    fn metrics_and_logs() {
        let metric = MetricResult::new("cpu", json!({"values": [1, 2]})).unwrap();
        assert_eq!(metric.data["values"], json!([1, 2]));
        assert!(MetricResult::new("cpu", 3).is_err());
        let page = LogsPage::new(["a", "b"]).next_token("2");
        assert_eq!(page.lines, ["a", "b"]);
        assert_eq!(page.next_token, "2");
    }
}
