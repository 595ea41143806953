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
use serde_json::Value;

use crate::{
    connector::{Deadline, Phase, SharedConnector},
    convert,
    manifest::Manifest,
    metrics::Metrics,
    proto::{connector as pb, core, task},
    runtime::{Runtime, RuntimeConfig},
    service::mapping,
};

/// What to run.
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
    let runtime = Runtime::new(options.runtime.clone(), Metrics::new()?)
        .context("cannot start the WebAssembly runtime")?;
    let manifest = Manifest::for_component(&options.component)?;
    let connector: SharedConnector = runtime.load(&options.component, &manifest).await?;
    let connection = core::Connection {
        secrets: options.secrets.iter().cloned().collect(),
        ..Default::default()
    };
    let create = pb::CreateTaskRequest {
        inputs: Some(options.inputs.clone()),
        template: Some(options.template.clone()),
        output_prefix: options.output_prefix.clone(),
        connection: Some(connection.clone()),
        ..Default::default()
    };
    let category = mapping::create_category(&create).map_err(|err| anyhow::anyhow!("{err}"))?;
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
    let request = mapping::create_request(create).map_err(|err| anyhow::anyhow!("{err}"))?;
    let name = connector.info().name.clone();
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

    let get = pb::GetTaskRequest {
        task_category: Some(pb::TaskCategory {
            name: category.name.clone(),
            version: category.version,
        }),
        resource_meta: meta.clone(),
        output_prefix: options.output_prefix.clone(),
        connection: Some(connection.clone()),
    };
    let mut last: Option<(Phase, String)> = None;
    let mut links_shown = Vec::new();
    loop {
        let request = mapping::get_request(get.clone()).map_err(|err| anyhow::anyhow!("{err}"))?;
        let resource = match connector.get(request, Deadline::NONE).await {
            Ok(resource) => resource,
            Err(err) => {
                writeln!(out, "{name} could not poll the task: {err}")?;
                return Ok(Outcome::Failed);
            }
        };
        let now = (resource.phase, resource.message.clone());
        if last.as_ref() != Some(&now) {
            let phase = mapping::phase_to_proto(now.0).as_str_name();
            match now.1.as_str() {
                "" => writeln!(out, "phase {phase}")?,
                message => writeln!(out, "phase {phase}: {message}")?,
            }
        }
        for link in &resource.log_links {
            if !links_shown.contains(&link.uri) {
                writeln!(out, "  log: {} {}", link.name, link.uri)?;
                links_shown.push(link.uri.clone());
            }
        }
        last = Some(now);
        if let Some(outcome) = terminal(resource.phase) {
            // The outputs as a Flyte client would get them.
            let response = mapping::get_response(resource)
                .map_err(|err| anyhow::anyhow!("the outputs do not convert: {err}"))?;
            print_outputs(&response, out)?;
            return Ok(outcome);
        }
        tokio::select! {
            () = tokio::time::sleep(options.poll_interval) => {}
            _ = interrupt.recv() => {
                writeln!(out, "interrupted: cancelling the task")?;
                let delete = mapping::delete_request(pb::DeleteTaskRequest {
                    task_category: get.task_category.clone(),
                    resource_meta: meta,
                    connection: Some(connection),
                })
                .map_err(|err| anyhow::anyhow!("{err}"))?;
                match connector.delete(delete, Deadline::NONE).await {
                    Ok(()) => writeln!(out, "cancelled")?,
                    Err(err) => writeln!(out, "{name} could not cancel the task: {err}")?,
                }
                return Ok(Outcome::Interrupted);
            }
        }
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

fn print_outputs(response: &pb::GetTaskResponse, out: &mut impl Write) -> anyhow::Result<()> {
    let Some(outputs) = response.resource.as_ref().and_then(|r| r.outputs.as_ref()) else {
        return Ok(());
    };
    writeln!(out, "outputs:")?;
    for named in &outputs.literals {
        let path = format!("output {:?}", named.name);
        let value = match &named.value {
            Some(literal) => convert::literal_to_json(literal, &path)?,
            None => Value::Null,
        };
        writeln!(out, "  {} = {value}", named.name)?;
    }
    Ok(())
}
