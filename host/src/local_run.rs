//! `flyte-connect run`: one task through one connector component, with no
//! Flyte cluster — what flyte's `AsyncConnectorExecutorMixin` does for
//! Python connectors. The component runs in the same sandbox, with the same
//! manifest and the same conversions as when served: create, then get every
//! poll interval until a terminal phase, printing each change; Ctrl-C
//! cancels the task (delete) before leaving.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{
    connector::{
        ConnectionMap, ConnectorError, Deadline, DeleteRequest, GetRequest, Output, Phase,
        Resource, SharedConnector, TaskCategory,
    },
    convert,
    manifest::Manifest,
    metrics::Metrics,
    proto::{core, task},
    runtime::{Runtime, RuntimeConfig},
    service::mapping,
};

/// Time between polls unless `--poll-interval` says.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// What `flyte-connect run` runs, and how.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The component.
    pub component: PathBuf,
    /// The task template.
    pub template: core::TaskTemplate,
    /// The task's inputs.
    pub inputs: task::Inputs,
    /// Connection secrets.
    pub secrets: Vec<(String, String)>,
    /// Time between polls.
    pub poll_interval: Duration,
    /// Handed to the connector as the output prefix.
    pub output_prefix: String,
    /// Sandbox limits, as the server has them.
    pub runtime: RuntimeConfig,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The task succeeded.
    Succeeded,
    /// The task, or the connector, failed.
    Failed,
    /// Ctrl-C: the task was cancelled.
    Interrupted,
}

/// Reads a task template: proto3 JSON when the file parses as JSON, else a
/// serialized `flyteidl2.core.TaskTemplate`.
pub fn read_template(path: &Path) -> anyhow::Result<core::TaskTemplate> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read template {}", path.display()))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(json) => serde_json::from_value(json)
            .with_context(|| format!("{} is not a TaskTemplate in proto3 JSON", path.display())),
        Err(_) => prost::Message::decode(bytes.as_slice()).with_context(|| {
            format!(
                "{} is neither JSON nor a serialized TaskTemplate",
                path.display()
            )
        }),
    }
}

/// Reads inputs given as a JSON object (input name → value, in the shapes
/// a connector sees them), typing each by the template's interface.
pub fn read_inputs(path: &Path, template: &core::TaskTemplate) -> anyhow::Result<task::Inputs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read inputs {}", path.display()))?;
    let Value::Object(values) =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
    else {
        bail!(
            "{} must hold a JSON object of input name → value",
            path.display()
        );
    };
    let declared = template
        .interface
        .as_ref()
        .and_then(|i| i.inputs.as_ref())
        .map(|vars| vars.variables.as_slice())
        .unwrap_or_default();
    let mut literals = Vec::new();
    for (name, value) in values {
        let literal_type = declared
            .iter()
            .find(|entry| entry.key == name)
            .and_then(|entry| entry.value.as_ref())
            .and_then(|variable| variable.r#type.as_ref())
            .with_context(|| {
                format!("input {name:?} is not declared by the template's interface")
            })?;
        let literal = convert::literal_from_json(&value, literal_type, &format!("input {name:?}"))?;
        literals.push(task::NamedLiteral {
            name,
            value: Some(literal),
        });
    }
    Ok(task::Inputs {
        literals,
        ..Default::default()
    })
}

/// Runs the task, printing its progress to `out`.
pub async fn run(options: RunOptions, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let connector = load(&options).await?;
    let name = connector.info().name.clone();
    let category = mapping::template_category(&options.template);
    let connection: ConnectionMap = options.secrets.iter().cloned().collect();
    let request = mapping::task_request(
        &options.template,
        &options.inputs,
        options.output_prefix.clone(),
        json!({}),
        connection.clone(),
    )
    .context("the inputs do not convert")?;
    // Listening from here on: a Ctrl-C during create cancels the task
    // once it exists, instead of leaving it running.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    let meta = match connector.create(request, Deadline::NONE).await {
        Ok(meta) => meta,
        Err(err) => {
            writeln!(out, "{name} could not create the task: {err}")?;
            return Ok(Outcome::Failed);
        }
    };
    writeln!(
        out,
        "{name} created the task; resource meta: {}",
        String::from_utf8_lossy(&meta)
    )?;
    let task = Task {
        connector,
        category,
        meta,
        output_prefix: options.output_prefix,
        connection,
    };
    let mut progress = Progress::default();
    loop {
        let resource = match task.get().await {
            Ok(resource) => resource,
            Err(err) => {
                writeln!(out, "{name} could not poll the task: {err}")?;
                return Ok(Outcome::Failed);
            }
        };
        progress.show(&resource, out)?;
        if let Some(outcome) = terminal(resource.phase) {
            print_outputs(resource.outputs.as_deref().unwrap_or_default(), out)?;
            return Ok(outcome);
        }
        tokio::select! {
            () = tokio::time::sleep(options.poll_interval) => {}
            _ = interrupt.recv() => {
                writeln!(out, "interrupted: cancelling the task")?;
                match task.delete().await {
                    Ok(()) => writeln!(out, "cancelled")?,
                    Err(err) => writeln!(out, "{name} could not cancel the task: {err}")?,
                }
                return Ok(Outcome::Interrupted);
            }
        }
    }
}

/// The component, loaded as the server would load it, once it serves the
/// template's task type.
async fn load(options: &RunOptions) -> anyhow::Result<SharedConnector> {
    let runtime = Runtime::new(options.runtime.clone(), Metrics::new()?)
        .context("cannot start the WebAssembly runtime")?;
    let manifest = Manifest::for_component(&options.component)?;
    let connector: SharedConnector = runtime.load(&options.component, &manifest).await?;
    let category = mapping::template_category(&options.template);
    if !connector.info().task_categories.contains(&category) {
        bail!(
            "{} serves {}, not the template's task type {category}",
            options.component.display(),
            connector
                .info()
                .task_categories
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(connector)
}

/// A task the connector created: what polling and cancelling it take.
struct Task {
    connector: SharedConnector,
    category: TaskCategory,
    meta: Vec<u8>,
    output_prefix: String,
    connection: ConnectionMap,
}

impl Task {
    async fn get(&self) -> Result<Resource, ConnectorError> {
        let request = GetRequest {
            task_category: self.category.clone(),
            resource_meta: self.meta.clone(),
            output_prefix: self.output_prefix.clone(),
            connection: self.connection.clone(),
        };
        self.connector.get(request, Deadline::NONE).await
    }

    async fn delete(&self) -> Result<(), ConnectorError> {
        let request = DeleteRequest {
            task_category: self.category.clone(),
            resource_meta: self.meta.clone(),
            connection: self.connection.clone(),
        };
        self.connector.delete(request, Deadline::NONE).await
    }
}

/// What was printed of the task so far: its last phase and message, and
/// the log links shown.
#[derive(Default)]
struct Progress {
    last: Option<(Phase, String)>,
    links_shown: Vec<String>,
}

impl Progress {
    /// Prints what changed since the last poll.
    fn show(&mut self, resource: &Resource, out: &mut impl Write) -> anyhow::Result<()> {
        let now = (resource.phase, resource.message.clone());
        if self.last.as_ref() != Some(&now) {
            let phase = mapping::phase_to_proto(now.0).as_str_name();
            match now.1.as_str() {
                "" => writeln!(out, "phase {phase}")?,
                message => writeln!(out, "phase {phase}: {message}")?,
            }
        }
        for link in &resource.log_links {
            if !self.links_shown.contains(&link.uri) {
                writeln!(out, "  log: {} {}", link.name, link.uri)?;
                self.links_shown.push(link.uri.clone());
            }
        }
        self.last = Some(now);
        Ok(())
    }
}

/// The outcome of a terminal phase; `None` while the task is on its way.
fn terminal(phase: Phase) -> Option<Outcome> {
    match phase {
        Phase::Succeeded => Some(Outcome::Succeeded),
        Phase::Failed | Phase::Aborted | Phase::RetryableFailed => Some(Outcome::Failed),
        Phase::Undefined
        | Phase::Queued
        | Phase::Running
        | Phase::Initializing
        | Phase::WaitingForResources => None,
    }
}

/// The outputs, once they are known to convert to literals as a Flyte
/// client would get them.
fn print_outputs(outputs: &[Output], out: &mut impl Write) -> anyhow::Result<()> {
    if outputs.is_empty() {
        return Ok(());
    }
    convert::outputs_to_proto(outputs).context("the outputs do not convert")?;
    writeln!(out, "outputs:")?;
    for output in outputs {
        writeln!(out, "  {} = {}", output.name, output.value)?;
    }
    Ok(())
}
