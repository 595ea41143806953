//! Slurm connector: runs the tasks of `flyteplugins-slurm` on an HPC
//! cluster with `sbatch` on its login node, reached over SSH — a drop-in
//! for the Python connector of the same name.
//!
//! - `create` renders the sbatch script (`#SBATCH` lines from the task's
//!   Slurm config, modules, sorted exports, then the task's container run
//!   with `srun` through Pyxis or apptainer, or the user's own script),
//!   writes it to the working folder (mode 0700) and submits it with
//!   `sbatch --parsable`.
//! - `get` asks `squeue`, then `sacct`, then `scontrol show job` (clusters
//!   without accounting), maps the state to a phase, and on failure adds
//!   the tail of the job's standard error to the message.
//! - `delete` runs `scancel` (cancelling twice is fine); `get_logs` returns
//!   the last 500 lines of the job's standard output and error.
//!
//! SSH goes through the host's SSH capability: the manifest's `[ssh]` names
//! the hosts and the known host keys; the private key is the connection
//! secret `ssh_private_key`. The resource meta is the Python connector's
//! `SlurmJobMetadata`, byte for byte.

mod custom;
mod login;
mod outputs;
pub mod script;
mod shell;
pub mod status;

use std::{
    collections::{BTreeMap, hash_map::RandomState},
    hash::{BuildHasher, Hasher},
};

use flyte_connector_sdk::{prelude::*, python::float_repr};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    custom::{ContainerSettings, Custom},
    login::Login,
    outputs::Collected,
    script::{ContainerJob, JobFiles, Preamble},
    shell::{quote, string_repr},
    status::{JobState, parse_sacct, parse_scontrol, parse_squeue},
};

/// The Slurm connector.
pub struct Slurm;

/// What `create` stores: the Python connector's `SlurmJobMetadata`, its
/// fields in its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmJobMetadata {
    pub job_id: String,
    pub job_name: String,
    pub host: String,
    pub username: String,
    pub port: u16,
    pub stdout_path: String,
    pub stderr_path: String,
    /// The known_hosts path the task or the connector named (recorded for
    /// the Python connector; here the manifest's `[ssh]` decides).
    #[serde(default)]
    pub known_hosts: Option<String>,
    #[serde(default)]
    pub skip_host_key_verification: bool,
    /// A `slurm_script` task's declared outputs.
    #[serde(default)]
    pub declared_outputs: BTreeMap<String, DeclaredOutput>,
}

/// One declared output of a `slurm_script` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredOutput {
    pub uri: String,
    /// `"file"` or `"directory"`.
    pub kind: String,
    /// `"connector"` or `"job"`.
    pub upload: String,
    pub written_to: String,
}

/// The template's container, as proto3 JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TemplateContainer {
    image: String,
    command: Vec<String>,
    args: Vec<String>,
    env: Vec<KeyValue>,
}

#[derive(Debug, Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
}

/// Eight random lowercase hex digits, from the randomly keyed hasher std
/// seeds from the system's randomness (WASI's, in the component).
fn random_suffix() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}

/// A field of the template read as `T`, `T::default()` when absent.
fn template_field<T: for<'de> Deserialize<'de> + Default>(
    task: &TaskRequest,
    name: &str,
) -> Result<T, Error> {
    match task.template().get(name) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(value) => T::deserialize(value).map_err(|err| {
            Error::invalid_request(format!("cannot read the template's {name}: {err}"))
        }),
    }
}

/// The job's environment, later sources winning: the template's container
/// env, the execution's identity, the execution's variables, the task's
/// `env`.
fn job_env(
    task: &TaskRequest,
    container: &TemplateContainer,
    custom: &Custom,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = container
        .env
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    let metadata = task.execution_metadata();
    if let Some(id) = metadata.get("taskExecutionId").filter(|id| id.is_object()) {
        let execution = &id["nodeExecutionId"]["executionId"];
        for (field, name) in [
            ("project", "FLYTE_INTERNAL_EXECUTION_PROJECT"),
            ("domain", "FLYTE_INTERNAL_EXECUTION_DOMAIN"),
            ("name", "FLYTE_INTERNAL_EXECUTION_ID"),
            ("org", "_U_ORG_NAME"),
        ] {
            if let Some(value) = execution[field].as_str().filter(|v| !v.is_empty()) {
                env.insert(name.to_owned(), value.to_owned());
            }
        }
        let attempt = id["retryAttempt"].as_u64().unwrap_or(0);
        env.insert("FLYTE_ATTEMPT_NUMBER".to_owned(), attempt.to_string());
    }
    if let Some(vars) = metadata["environmentVariables"].as_object() {
        for (key, value) in vars {
            env.insert(key.clone(), shell::python_str(value));
        }
    }
    for (key, value) in custom.env.iter().flatten() {
        env.insert(key.clone(), shell::python_str(value));
    }
    env
}

/// A `slurm_script` task's inputs as `FLYTE_INPUT_<NAME>`: scalars as
/// Python writes them, files and directories as their URI.
fn input_env(task: &TaskRequest) -> Result<BTreeMap<String, String>, Error> {
    let types = task.input_types();
    let mut env = BTreeMap::new();
    let Some(inputs) = task.inputs_json().as_object() else {
        return Ok(env);
    };
    for (name, value) in inputs {
        let literal_type = types.get(name).unwrap_or(&Value::Null);
        let rendered = match (literal_type.get("simple").and_then(Value::as_str), value) {
            (Some("BOOLEAN"), Value::Bool(b)) => b.to_string(),
            (Some("INTEGER"), Value::Number(n)) => n.to_string(),
            (Some("FLOAT"), Value::Number(n)) => n.as_f64().map(float_repr).unwrap_or_default(),
            (Some("STRING"), Value::String(s)) => s.clone(),
            _ => match value.get("uri").and_then(Value::as_str) {
                Some(uri) if literal_type.get("blob").is_some() => uri.to_owned(),
                _ => {
                    return Err(Error::invalid_request(format!(
                        "Input {} of type {} cannot be passed to an sbatch script. Scalars \
                         become FLYTE_INPUT_<NAME>, and File/Dir become their URI; anything \
                         else has no representation in the environment. Pass a URI as a string \
                         and fetch it in the script.",
                        string_repr(name),
                        python_type_name(literal_type)
                    )));
                }
            },
        };
        env.insert(
            format!("FLYTE_INPUT_{}", script::env_suffix(name)),
            rendered,
        );
    }
    Ok(env)
}

/// The Python type an input of `literal_type` arrives as in the Python
/// connector, for messages.
fn python_type_name(literal_type: &Value) -> &'static str {
    match literal_type.get("simple").and_then(Value::as_str) {
        Some("DATETIME") => "datetime",
        Some("DURATION") => "timedelta",
        Some("STRUCT") => "dict",
        Some("NONE") => "NoneType",
        Some("BINARY") => "bytes",
        _ if literal_type.get("collectionType").is_some() => "list",
        _ if literal_type.get("mapValueType").is_some() => "dict",
        _ if literal_type.get("structuredDatasetType").is_some() => "DataFrame",
        _ => "object",
    }
}

impl Slurm {
    /// The script of `task`, whose files are `files`, and its declared
    /// outputs.
    fn render(
        task: &TaskRequest,
        custom: &Custom,
        job_name: &str,
        files: &JobFiles,
    ) -> Result<(String, BTreeMap<String, DeclaredOutput>), Error> {
        let container: TemplateContainer = template_field(task, "container")?;
        let empty = Map::new();
        let sbatch = custom.sbatch.as_ref().unwrap_or(&empty);
        let options = custom.sbatch_options.as_ref().unwrap_or(&empty);
        let directives = script::directives(job_name, files, sbatch, options)?;
        let mut env = job_env(task, &container, custom);
        let modules = custom.modules.clone().unwrap_or_default();
        match task.task_type() {
            "slurm_script" => {
                let body = custom
                    .script
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| Error::invalid_request("slurm_script task has no script"))?;
                env.extend(input_env(task)?);
                let empty_outputs = Map::new();
                let declared = outputs::declare(
                    custom.outputs.as_ref().unwrap_or(&empty_outputs),
                    custom.output_upload.as_deref(),
                    task.output_prefix(),
                    &files.outputs,
                )?;
                env.extend(declared.env);
                let declared = declared.outputs;
                // Where the connector moves outputs from, made by the job
                // (before the script, as the Python connector does).
                let prelude = declared
                    .values()
                    .any(|o| o.upload == "connector")
                    .then(|| format!("mkdir -p {}", quote(&files.outputs)));
                let preamble = Preamble {
                    directives,
                    modules: script::module_lines(&modules)?,
                    exports: script::export_lines(&env)?,
                };
                let script = script::user_script(&preamble, body, prelude.as_deref());
                Ok((script, declared))
            }
            _ => {
                let settings = custom.container.as_ref();
                let default_settings = ContainerSettings::default();
                let image = settings
                    .and_then(|c| c.image.as_deref())
                    .filter(|i| !i.is_empty())
                    .or(Some(container.image.as_str()).filter(|i| !i.is_empty()))
                    .ok_or_else(|| Error::invalid_request("slurm task has no container image"))?;
                let command: Vec<String> = container
                    .command
                    .iter()
                    .chain(&container.args)
                    .cloned()
                    .collect();
                let gres = sbatch
                    .get("gres")
                    .map(shell::python_str)
                    .unwrap_or_default();
                let job = ContainerJob {
                    image,
                    command: &command,
                    settings: settings.unwrap_or(&default_settings),
                    gpus: gres.to_lowercase().contains("gpu")
                        || sbatch.get("gpus_per_node").is_some_and(|g| !g.is_null()),
                };
                let srun = job.srun_line()?;
                let preamble = Preamble {
                    directives,
                    modules: script::module_lines(&modules)?,
                    exports: script::export_lines(&env)?,
                };
                Ok((script::container_script(&preamble, &srun), BTreeMap::new()))
            }
        }
    }

    /// The job's state: `squeue`, else `sacct`, else `scontrol`. Slurm
    /// unreachable is an error, never an absent job.
    fn state(login: &Login, meta: &SlurmJobMetadata) -> Result<JobState, Error> {
        let id = &meta.job_id;
        let queue = login.run(&format!("squeue -h -j {} -o '%i|%T|%r'", quote(id)))?;
        unreachable_is_an_error("squeue", login, &queue)?;
        if let Some(state) = parse_squeue(&queue.stdout)
            .into_iter()
            .find(|s| &s.job_id == id)
        {
            return Ok(state);
        }
        let accounting = login.run(&format!(
            "sacct -X -n -P -j {} --format=JobIDRaw,State,ExitCode,Reason",
            quote(id)
        ))?;
        unreachable_is_an_error("sacct", login, &accounting)?;
        if let Some(state) = parse_sacct(&accounting.stdout)
            .into_iter()
            .rfind(|s| &s.job_id == id)
        {
            return Ok(state);
        }
        let shown = login.run(&format!("scontrol show job {} --oneliner", quote(id)))?;
        if shown.rc == 0
            && let Some(state) = parse_scontrol(&shown.stdout)
        {
            return Ok(state);
        }
        Err(Error::failed(format!(
            "Slurm job {id} ({}) is not known to squeue or sacct on {}",
            meta.job_name,
            login.host()
        )))
    }

    fn login(meta: &SlurmJobMetadata, connection: &Connection) -> Result<Login, Error> {
        Login::open(&meta.host, meta.port, &meta.username, connection)
    }
}

/// Fails the call when `command`'s standard error says Slurm could not be
/// reached: retryable, since the controller comes back.
fn unreachable_is_an_error(command: &str, login: &Login, ran: &login::Ran) -> Result<(), Error> {
    if ran.rc != 0 && status::unreachable(&ran.stderr) {
        return Err(Error::retryable(format!(
            "`{command}` could not reach Slurm on {} (rc={}): {}",
            login.host(),
            ran.rc,
            ran.stderr.trim()
        )));
    }
    Ok(())
}

/// The job id `sbatch --parsable` printed: `95` or `95;cluster`.
fn parse_job_id(output: &str) -> Result<String, Error> {
    let first = output.trim().lines().next().unwrap_or_default();
    let id = first.split(';').next().unwrap_or_default().trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::failed(format!(
            "Unexpected sbatch output: {}",
            string_repr(output)
        )));
    }
    Ok(id.to_owned())
}

/// `posixpath.dirname`.
fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(at) => path[..at].trim_end_matches('/'),
        None => "",
    }
}

impl Connector for Slurm {
    type Meta = SlurmJobMetadata;

    fn metadata() -> Metadata {
        Metadata::new("Slurm Connector")
            .task_type("slurm")
            .task_type("slurm_script")
    }

    fn create(task: TaskRequest) -> Result<SlurmJobMetadata, Error> {
        let custom: Custom = task.custom::<Option<Custom>>()?.unwrap_or_default();
        // A malformed ceiling fails now, not when the job is done.
        outputs::upload_max()?;
        let target = custom.target()?;
        if custom.asks_to_skip_host_keys() {
            eprintln!(
                "Ignoring `skip_host_key_verification` from task config: only the connector's \
                 manifest ([ssh] skip_host_key_verification) skips host-key verification"
            );
        }
        let template_name = task.template()["id"]["name"].as_str().unwrap_or_default();
        let job_name = script::job_name(template_name, &random_suffix());
        let login = Login::open(
            &target.host,
            target.port,
            &target.username,
            task.connection(),
        )?;
        let mut working_dir = custom.working_dir();
        if !working_dir.starts_with('/') {
            let home = login.run_checked("pwd")?;
            working_dir = script::path_join(home.trim(), &working_dir);
        }
        let files = JobFiles::new(&working_dir, &job_name);
        let (script, declared_outputs) = Self::render(&task, &custom, &job_name, &files)?;
        login.run_checked(&format!("mkdir -p {}", quote(dirname(&files.script))))?;
        login.write(&files.script, &script, 0o700)?;
        let submitted =
            login.run_checked(&format!("sbatch --parsable {}", quote(&files.script)))?;
        let job_id = parse_job_id(&submitted)?;
        eprintln!(
            "Submitted Slurm job {job_id} ({job_name}) to {}",
            target.host
        );
        Ok(SlurmJobMetadata {
            job_id,
            job_name,
            host: target.host,
            username: target.username,
            port: target.port,
            stdout_path: files.stdout,
            stderr_path: files.stderr,
            known_hosts: target.known_hosts,
            skip_host_key_verification: false,
            declared_outputs,
        })
    }

    fn get(meta: SlurmJobMetadata, ctx: &Context) -> Result<Resource, Error> {
        let login = Self::login(&meta, ctx.connection())?;
        let state = Self::state(&login, &meta)?;
        let phase = state.phase()?;
        let mut message = format!(
            "{}\nJob files on {}@{}: {} (stdout), {} (stderr)",
            state.describe(),
            meta.username,
            meta.host,
            meta.stdout_path,
            meta.stderr_path
        );
        let mut collected_outputs = None;
        let mut final_phase = phase;
        if phase == Phase::Succeeded && !meta.declared_outputs.is_empty() {
            let (collected_phase, detail, outputs) =
                match outputs::collect(login.session(), &meta.job_id, &meta.declared_outputs)? {
                    Collected::Done(outputs) => (Phase::Succeeded, None, Some(outputs)),
                    Collected::Moving(detail) => (Phase::Running, Some(detail), None),
                    Collected::Failed(detail) => (Phase::Failed, Some(detail), None),
                };
            final_phase = collected_phase;
            if let Some(detail) = detail {
                message.push('\n');
                message.push_str(&detail);
            }
            collected_outputs = outputs;
        }
        if phase == Phase::Running {
            message.push_str(&format!(
                "\nAttach to the running job: ssh {}@{} 'srun --jobid={} --overlap --pty bash'",
                meta.username, meta.host, meta.job_id
            ));
        }
        if matches!(final_phase, Phase::Failed | Phase::RetryableFailed) {
            let tail = login.tail(&meta.stderr_path, 30)?;
            if !tail.trim().is_empty() {
                message.push_str(&format!(
                    "\n--- stderr (last 30 lines) ---\n{}",
                    tail.trim_end()
                ));
            }
        }
        let answer = Resource::new(final_phase).message(message);
        Ok(match collected_outputs {
            Some(outputs) => answer.outputs(outputs),
            None => answer,
        })
    }

    fn delete(meta: SlurmJobMetadata, ctx: &Context) -> Result<(), Error> {
        let login = Self::login(&meta, ctx.connection())?;
        let cancelled = login.run(&format!("scancel {}", quote(&meta.job_id)))?;
        if cancelled.rc != 0 && !cancelled.stderr.contains("Invalid job id") {
            return Err(Error::failed(format!(
                "scancel {} failed on {}: {}",
                meta.job_id,
                meta.host,
                cancelled.stderr.trim()
            )));
        }
        Ok(())
    }

    fn get_logs(meta: SlurmJobMetadata, query: LogsQuery) -> Result<LogsPage, Error> {
        let login = Self::login(&meta, &query.connection)?;
        let mut lines = Vec::new();
        for (label, path) in [("stdout", &meta.stdout_path), ("stderr", &meta.stderr_path)] {
            let text = login.tail(path, 500)?;
            if text.trim().is_empty() {
                continue;
            }
            lines.push(format!("--- {label}: {path} ---"));
            lines.extend(text.lines().map(str::to_owned));
        }
        if lines.is_empty() {
            lines.push(format!(
                "No output yet from Slurm job {}. Slurm creates {} when the job starts writing.",
                meta.job_id, meta.stdout_path
            ));
        }
        Ok(LogsPage::new(lines))
    }
}

flyte_connector_sdk::export_connector!(Slurm);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_meta_is_the_python_connectors() {
        let python = r#"{"job_id": "95", "job_name": "flyte-train-12345678", "host": "login", "username": "flyte", "port": 2222, "stdout_path": "/w/x.out", "stderr_path": "/w/x.err", "known_hosts": null, "skip_host_key_verification": false, "declared_outputs": {}}"#;
        let meta: SlurmJobMetadata = serde_json::from_str(python).expect("decode");
        assert_eq!(meta.port, 2222);
        assert_eq!(meta.job_id, "95");
        let written = serde_json::to_value(&meta).expect("encode");
        let keys: Vec<&String> = written.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            [
                "job_id",
                "job_name",
                "host",
                "username",
                "port",
                "stdout_path",
                "stderr_path",
                "known_hosts",
                "skip_host_key_verification",
                "declared_outputs"
            ]
        );
    }

    #[test]
    fn sbatch_output_is_read_as_the_python_connector_reads_it() {
        assert_eq!(parse_job_id("95;cluster\n").expect("id"), "95");
        assert_eq!(parse_job_id("  96\n").expect("id"), "96");
        assert_eq!(
            parse_job_id("Submitted batch job 1\n")
                .expect_err("words")
                .message(),
            "Unexpected sbatch output: 'Submitted batch job 1\\n'"
        );
        assert!(parse_job_id("").is_err());
    }

    #[test]
    fn dirname_is_posixpaths() {
        assert_eq!(
            dirname("/home/u/.flyte/jobs/x.sbatch"),
            "/home/u/.flyte/jobs"
        );
        assert_eq!(dirname("/x.sbatch"), "/");
        assert_eq!(dirname("x.sbatch"), "");
    }

    #[test]
    fn the_environment_layers_win_in_the_python_connectors_order() {
        let task = TaskRequest::new(json!({
            "type": "slurm",
            "container": {"env": [{"key": "A", "value": "template"}, {"key": "B", "value": "t"}]},
        }))
        .with_execution_metadata(json!({
            "taskExecutionId": {
                "nodeExecutionId": {"executionId": {"project": "proj", "domain": "dev",
                                                    "name": "rabc", "org": "myorg"}},
                "retryAttempt": 1
            },
            "environmentVariables": {"B": "execution", "ACTION_NAME": "a1"}
        }));
        let container: TemplateContainer = template_field(&task, "container").expect("container");
        let custom: Custom =
            serde_json::from_value(json!({"env": {"A": "task", "N": 3.0}})).expect("custom");
        let env = job_env(&task, &container, &custom);
        let expected: BTreeMap<String, String> = [
            ("A", "task"),
            ("ACTION_NAME", "a1"),
            ("B", "execution"),
            ("FLYTE_ATTEMPT_NUMBER", "1"),
            ("FLYTE_INTERNAL_EXECUTION_DOMAIN", "dev"),
            ("FLYTE_INTERNAL_EXECUTION_ID", "rabc"),
            ("FLYTE_INTERNAL_EXECUTION_PROJECT", "proj"),
            ("N", "3.0"),
            ("_U_ORG_NAME", "myorg"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn script_inputs_are_exported_as_python_writes_them() {
        let task = TaskRequest::new(json!({"type": "slurm_script"}))
            .with_input("epochs", json!(3), json!({"simple": "INTEGER"}))
            .with_input("lr", json!(0.001), json!({"simple": "FLOAT"}))
            .with_input("big", json!(1e16), json!({"simple": "FLOAT"}))
            .with_input("flag", json!(true), json!({"simple": "BOOLEAN"}))
            .with_input("name", json!("a b"), json!({"simple": "STRING"}))
            .with_input(
                "data",
                json!({"uri": "s3://b/x.csv", "format": "", "dimensionality": "SINGLE"}),
                json!({"blob": {}}),
            );
        let env = input_env(&task).expect("env");
        assert_eq!(env["FLYTE_INPUT_EPOCHS"], "3");
        assert_eq!(env["FLYTE_INPUT_LR"], "0.001");
        assert_eq!(env["FLYTE_INPUT_BIG"], "1e+16");
        assert_eq!(env["FLYTE_INPUT_FLAG"], "true");
        assert_eq!(env["FLYTE_INPUT_NAME"], "a b");
        assert_eq!(env["FLYTE_INPUT_DATA"], "s3://b/x.csv");
        let task = TaskRequest::new(json!({"type": "slurm_script"})).with_input(
            "xs",
            json!([1, 2]),
            json!({"collectionType": {"simple": "INTEGER"}}),
        );
        assert!(
            input_env(&task)
                .expect_err("a list")
                .message()
                .starts_with("Input 'xs' of type list cannot be passed to an sbatch script.")
        );
    }
}
