//! Databricks connector: runs the tasks of `flyteplugins-databricks` as
//! one-time runs of the Databricks Jobs API 2.1, a drop-in for the Python
//! connector of the same name.
//!
//! - `create` submits the run (`POST /api/2.1/jobs/runs/submit`): the
//!   template's `custom.databricksConf`, completed as the Python connector
//!   completes it (cluster image, Spark conf and environment from the
//!   template, Flyte's Databricks entrypoint run from git with the
//!   container's arguments).
//!   The submit carries an `idempotency_token` made from the task
//!   execution's id (unless the configuration sets one), so the SDK may
//!   repeat it when Databricks throttles it: a repeat returns the run the
//!   first one started instead of starting another.
//! - `get` polls it (`GET /api/2.1/jobs/runs/get`) and maps its state to a
//!   Flyte phase, with a link to the run in the Databricks console.
//! - `delete` cancels it (`POST /api/2.1/jobs/runs/cancel`).
//!
//! The API token is the connection secret `databricks_token`. The resource
//! meta is the Python connector's, byte for byte, so runs move between the
//! two servers.

use flyte_connector_sdk::{http, prelude::*};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Environment variable naming the workspace when the task does not.
pub const INSTANCE_ENV: &str = "FLYTE_DATABRICKS_INSTANCE";

/// Where Flyte's Databricks entrypoint lives, as the Python connector
/// submits it.
const ENTRYPOINT_FILE: &str = "flyteplugins/databricks/entrypoint.py";
const ENTRYPOINT_REPO: &str = "https://github.com/flyteorg/flytetools";
const ENTRYPOINT_COMMIT: &str = "194364210c47c49ce66c419e8fb68d6f9c06fd7e";

/// The Databricks connector.
pub struct Databricks;

/// What `create` stores: the Python connector's `DatabricksJobMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabricksMeta {
    /// The workspace, as the task named it.
    pub databricks_instance: String,
    /// The run's id (a string, as the Python connector writes it).
    pub run_id: String,
}

/// The parts of the template's `custom` this connector reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Custom {
    databricks_conf: Option<Map<String, Value>>,
    databricks_instance: Option<String>,
    spark_conf: Option<Map<String, Value>>,
}

/// The template's container, as proto3 JSON.
#[derive(Debug, Default, Deserialize)]
struct Container {
    #[serde(default)]
    image: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
}

#[derive(Debug, Deserialize)]
struct EnvVar {
    key: String,
    #[serde(default)]
    value: String,
}

/// The run spec to submit: `databricksConf`, completed.
/// The run's `idempotency_token`: the SHA-256 (hex, 64 characters, the
/// most Databricks takes) of the task execution's id as compact JSON with
/// sorted keys, so every attempt of one task execution, on any replica and
/// in either language's connector, sends the same token. None when the
/// request carries no task execution id.
fn idempotency_token(execution_metadata: &Value) -> Option<String> {
    use sha2::{Digest, Sha256};
    let id = execution_metadata.get("taskExecutionId")?;
    if id.as_object().is_none_or(Map::is_empty) {
        return None;
    }
    let digest = Sha256::digest(sorted(id).to_string().as_bytes());
    Some(digest.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// `value` with every object's keys in sorted order.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|key| (key.clone(), sorted(&object[key])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn run_spec(custom: Custom, container: Container) -> Result<Value, Error> {
    let mut spec = custom.databricks_conf.ok_or_else(|| {
        Error::invalid_request(
            "the task template has no Databricks job configuration (custom.databricksConf)",
        )
    })?;
    let has_existing_cluster = spec
        .get("existing_cluster_id")
        .is_some_and(|id| !id.is_null());
    if !has_existing_cluster {
        let cluster = spec
            .get_mut("new_cluster")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| {
                Error::invalid_request(
                    "the Databricks job configuration needs either existing_cluster_id or \
                     new_cluster",
                )
            })?;
        if is_empty(cluster.get("docker_image")) {
            cluster.insert("docker_image".into(), json!({ "url": container.image }));
        }
        if is_empty(cluster.get("spark_conf")) {
            let spark_conf = custom.spark_conf.unwrap_or_default();
            cluster.insert("spark_conf".into(), Value::Object(spark_conf));
        }
        let env = container
            .env
            .into_iter()
            .map(|var| (var.key, Value::String(var.value)));
        match cluster
            .get_mut("spark_env_vars")
            .and_then(Value::as_object_mut)
        {
            Some(vars) if !vars.is_empty() => vars.extend(env),
            _ => {
                cluster.insert("spark_env_vars".into(), Value::Object(env.collect()));
            }
        }
    }
    spec.insert(
        "spark_python_task".into(),
        json!({
            "python_file": ENTRYPOINT_FILE,
            "parameters": container.args,
            "source": "GIT",
        }),
    );
    spec.insert(
        "git_source".into(),
        json!({
            "git_url": ENTRYPOINT_REPO,
            "git_provider": "gitHub",
            "git_commit": ENTRYPOINT_COMMIT,
        }),
    );
    let mut spec = Value::Object(spec);
    integral_numbers(&mut spec);
    Ok(spec)
}

/// Numbers in a template's `custom` went through `google.protobuf.Struct`,
/// which knows only doubles: `3600` arrives as `3600.0`. The Jobs API's
/// fields are integers, so whole numbers go back to being integers.
fn integral_numbers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64()
                && float.fract() == 0.0
                && float.abs() < 9_007_199_254_740_992.0
            {
                *value = Value::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Whether a value is absent or empty, as Python's `not value` says.
fn is_empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Object(map)) => map.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Bool(b)) => !b,
        Some(Value::Number(_)) => false,
    }
}

/// The API's base URL: `https://INSTANCE`, or the instance itself when it
/// already names a scheme (private endpoints, proxies, tests).
fn base_url(instance: &str) -> String {
    let instance = instance.trim_end_matches('/');
    if instance.starts_with("https://") || instance.starts_with("http://") {
        instance.to_owned()
    } else {
        format!("https://{instance}")
    }
}

/// Sends `request`, turning a refused token into a failure that names the
/// workspace (never the token) and other error statuses into errors that
/// carry Databricks' answer (retryable for 429 and 5xx).
fn call(request: http::Request, instance: &str, what: &str) -> Result<http::Response, Error> {
    let response = request.send()?;
    match response.status() {
        401 | 403 => Err(Error::failed(format!(
            "Databricks workspace {instance} refused the API token (HTTP {}) while trying to \
             {what}: check the connection secret `databricks_token`",
            response.status()
        ))),
        _ => Ok(response.error_for_status()?),
    }
}

#[derive(Deserialize)]
struct Submitted {
    run_id: Value,
}

#[derive(Default, Deserialize)]
struct Run {
    job_id: Option<Value>,
    #[serde(default)]
    state: RunState,
}

#[derive(Default, Deserialize)]
struct RunState {
    life_cycle_state: Option<String>,
    result_state: Option<String>,
    #[serde(default)]
    state_message: String,
}

/// The Flyte phase of a run's state. Every state the Jobs API documents
/// has one; the Python connector fails on QUEUED, BLOCKED and
/// WAITING_FOR_RETRY, which are runs still on their way.
pub fn phase_of(life_cycle_state: &str, result_state: Option<&str>) -> Result<Phase, Error> {
    Ok(match life_cycle_state {
        "QUEUED" => Phase::Queued,
        "PENDING" => Phase::Initializing,
        "BLOCKED" => Phase::WaitingForResources,
        "RUNNING" | "TERMINATING" | "WAITING_FOR_RETRY" => Phase::Running,
        "SKIPPED" => Phase::Failed,
        "INTERNAL_ERROR" => Phase::RetryableFailed,
        "TERMINATED" => match result_state {
            Some("SUCCESS" | "SUCCESS_WITH_FAILURES") => Phase::Succeeded,
            Some(
                "FAILED" | "TIMEDOUT" | "CANCELED" | "EXCLUDED" | "UPSTREAM_FAILED"
                | "UPSTREAM_CANCELED" | "DISABLED",
            ) => Phase::Failed,
            // Skipped for too many concurrent runs: a later attempt can run.
            Some("MAXIMUM_CONCURRENT_RUNS_REACHED") => Phase::RetryableFailed,
            Some(other) => {
                return Err(Error::failed(format!(
                    "unrecognized Databricks result state {other}"
                )));
            }
            None => {
                return Err(Error::failed(
                    "the Databricks run is TERMINATED but has no result state",
                ));
            }
        },
        other => {
            return Err(Error::failed(format!(
                "unrecognized Databricks life cycle state {other}"
            )));
        }
    })
}

impl Connector for Databricks {
    type Meta = DatabricksMeta;

    fn metadata() -> Metadata {
        Metadata::new("Databricks Connector").task_type("databricks")
    }

    fn create(task: TaskRequest) -> Result<DatabricksMeta, Error> {
        let custom: Custom = task.custom::<Option<Custom>>()?.unwrap_or_default();
        let container: Container = match task.template().get("container") {
            Some(container) => serde_json::from_value(container.clone()).map_err(|err| {
                Error::invalid_request(format!("cannot read the template's container: {err}"))
            })?,
            None => Container::default(),
        };
        let instance = custom
            .databricks_instance
            .clone()
            .filter(|instance| !instance.is_empty())
            .or_else(|| std::env::var(INSTANCE_ENV).ok())
            .ok_or_else(|| {
                Error::invalid_request(format!(
                    "the task names no Databricks instance: set databricks_instance on the task, \
                     or {INSTANCE_ENV} in the connector's manifest"
                ))
            })?;
        let mut spec = run_spec(custom, container)?;
        let idempotent = match spec.get("idempotency_token") {
            Some(token) => !token.is_null(),
            None => match idempotency_token(task.execution_metadata()) {
                Some(token) => {
                    spec["idempotency_token"] = Value::String(token);
                    true
                }
                None => false,
            },
        };
        let token = task.secret("databricks_token")?;
        let url = format!("{}/api/2.1/jobs/runs/submit", base_url(&instance));
        let mut request = http::post(url).bearer_auth(token).json(&spec)?;
        if idempotent {
            request = request.idempotent();
        }
        let submitted: Submitted = call(request, &instance, "submit the run")?.json()?;
        let run_id = match submitted.run_id {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s,
            other => {
                return Err(Error::failed(format!(
                    "Databricks answered the submit with run_id {other}"
                )));
            }
        };
        eprintln!("submitted Databricks run {run_id} to {instance}");
        Ok(DatabricksMeta {
            databricks_instance: instance,
            run_id,
        })
    }

    fn get(meta: DatabricksMeta, ctx: &Context) -> Result<Resource, Error> {
        let instance = &meta.databricks_instance;
        let token = ctx.secret("databricks_token")?;
        let url = format!(
            "{}/api/2.1/jobs/runs/get?run_id={}",
            base_url(instance),
            http::encode_component(&meta.run_id)
        );
        let run: Run = call(http::get(url).bearer_auth(token), instance, "poll the run")?.json()?;
        let life_cycle = run.state.life_cycle_state.as_deref().unwrap_or("PENDING");
        let phase = phase_of(life_cycle, run.state.result_state.as_deref())?;
        let job_id = match run.job_id {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let console = format!("{}/#job/{job_id}/run/{}", base_url(instance), meta.run_id);
        Ok(Resource::new(phase)
            .message(run.state.state_message)
            .log_link(TaskLog::new("Databricks Console", console)))
    }

    fn delete(meta: DatabricksMeta, ctx: &Context) -> Result<(), Error> {
        let instance = &meta.databricks_instance;
        let token = ctx.secret("databricks_token")?;
        let run_id = meta
            .run_id
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(meta.run_id.clone()));
        let url = format!("{}/api/2.1/jobs/runs/cancel", base_url(instance));
        let request = http::post(url)
            .bearer_auth(token)
            .json(&json!({ "run_id": run_id }))?;
        call(request, instance, "cancel the run")?;
        Ok(())
    }
}

flyte_connector_sdk::export_connector!(Databricks);

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(conf: Value) -> Custom {
        serde_json::from_value(json!({
            "databricksConf": conf,
            "databricksInstance": "myorg.cloud.databricks.com",
            "sparkConf": {"spark.driver.memory": "1g"},
        }))
        .expect("custom")
    }

    fn container() -> Container {
        serde_json::from_value(json!({
            "image": "ghcr.io/org/image:v1",
            "args": ["pyflyte-execute", "--inputs", "s3://x"],
            "env": [{"key": "A", "value": "1"}],
        }))
        .expect("container")
    }

    #[test]
    fn a_new_cluster_is_completed_from_the_template() {
        let spec = run_spec(
            custom(json!({"run_name": "r", "new_cluster": {"spark_env_vars": {"B": "2"}}})),
            container(),
        )
        .expect("spec");
        let cluster = &spec["new_cluster"];
        assert_eq!(cluster["docker_image"]["url"], "ghcr.io/org/image:v1");
        assert_eq!(cluster["spark_conf"]["spark.driver.memory"], "1g");
        assert_eq!(cluster["spark_env_vars"], json!({"B": "2", "A": "1"}));
        assert_eq!(
            spec["spark_python_task"]["parameters"],
            json!(["pyflyte-execute", "--inputs", "s3://x"])
        );
        assert_eq!(spec["spark_python_task"]["source"], "GIT");
        assert_eq!(spec["git_source"]["git_commit"], ENTRYPOINT_COMMIT);
        assert_eq!(spec["run_name"], "r");
    }

    #[test]
    fn whole_numbers_from_the_struct_are_integers_again() {
        let spec = run_spec(
            custom(json!({"existing_cluster_id": "c", "timeout_seconds": 3600.0, "x": [1.5, 2.0]})),
            container(),
        )
        .expect("spec");
        assert_eq!(spec["timeout_seconds"].to_string(), "3600");
        assert_eq!(spec["x"].to_string(), "[1.5,2]");
    }

    #[test]
    fn an_existing_cluster_is_left_alone_and_no_cluster_is_invalid() {
        let spec =
            run_spec(custom(json!({"existing_cluster_id": "c-1"})), container()).expect("spec");
        assert!(spec.get("new_cluster").is_none());
        let err = run_spec(custom(json!({"run_name": "r"})), container()).expect_err("no cluster");
        assert!(matches!(err, Error::InvalidRequest(m) if m.contains("existing_cluster_id")));
        let err = run_spec(Custom::default(), container()).expect_err("no conf");
        assert!(matches!(err, Error::InvalidRequest(m) if m.contains("databricksConf")));
    }

    #[test]
    fn every_documented_state_has_a_phase() {
        for (life, result, phase) in [
            ("QUEUED", None, Phase::Queued),
            ("PENDING", None, Phase::Initializing),
            ("RUNNING", None, Phase::Running),
            ("TERMINATING", None, Phase::Running),
            ("BLOCKED", None, Phase::WaitingForResources),
            ("WAITING_FOR_RETRY", None, Phase::Running),
            ("SKIPPED", None, Phase::Failed),
            ("INTERNAL_ERROR", None, Phase::RetryableFailed),
            ("TERMINATED", Some("SUCCESS"), Phase::Succeeded),
            (
                "TERMINATED",
                Some("SUCCESS_WITH_FAILURES"),
                Phase::Succeeded,
            ),
            ("TERMINATED", Some("FAILED"), Phase::Failed),
            ("TERMINATED", Some("TIMEDOUT"), Phase::Failed),
            ("TERMINATED", Some("CANCELED"), Phase::Failed),
            ("TERMINATED", Some("EXCLUDED"), Phase::Failed),
            ("TERMINATED", Some("UPSTREAM_FAILED"), Phase::Failed),
            ("TERMINATED", Some("UPSTREAM_CANCELED"), Phase::Failed),
            ("TERMINATED", Some("DISABLED"), Phase::Failed),
            (
                "TERMINATED",
                Some("MAXIMUM_CONCURRENT_RUNS_REACHED"),
                Phase::RetryableFailed,
            ),
        ] {
            assert_eq!(
                phase_of(life, result).expect(life),
                phase,
                "{life} {result:?}"
            );
        }
        assert!(phase_of("EXPLODED", None).is_err());
        assert!(phase_of("TERMINATED", None).is_err());
    }

    #[test]
    fn instances_with_a_scheme_are_the_base_url() {
        assert_eq!(
            base_url("myorg.cloud.databricks.com"),
            "https://myorg.cloud.databricks.com"
        );
        assert_eq!(base_url("http://127.0.0.1:9000/"), "http://127.0.0.1:9000");
    }

    #[test]
    fn the_meta_is_the_python_connectors_byte_for_byte() {
        let meta = DatabricksMeta {
            databricks_instance: "myorg.cloud.databricks.com".into(),
            run_id: "123".into(),
        };
        let bytes = flyte_connector_sdk::__private::encode_meta(&meta).expect("encode");
        assert_eq!(
            bytes,
            br#"{"databricks_instance": "myorg.cloud.databricks.com", "run_id": "123"}"#
        );
    }
}
