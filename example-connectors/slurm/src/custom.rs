//! What a task asks for: the template's `custom` as `flyteplugins-slurm`'s
//! task plugin writes it, and the connector's own settings (the manifest's
//! `[env]`), which win over the task's where the Python connector's do.

use flyte_connector_sdk::Error;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The host to reach, winning over the task's `connection.host`.
pub const HOST_ENV: &str = "FLYTE_SLURM_HOST";
/// The user to log in as, winning over the task's `connection.username`.
pub const USERNAME_ENV: &str = "FLYTE_SLURM_USERNAME";
/// The SSH port, winning over the task's `connection.port`.
pub const PORT_ENV: &str = "FLYTE_SLURM_PORT";
/// The known_hosts path recorded in the resource meta, winning over the
/// task's (the host's manifest decides which keys are known).
pub const KNOWN_HOSTS_ENV: &str = "FLYTE_SLURM_KNOWN_HOSTS";
/// Where jobs' files go when the task names no `working_dir`.
pub const WORKING_DIR_ENV: &str = "FLYTE_SLURM_WORKING_DIR";
/// The private key when the connection carries none.
pub const PRIVATE_KEY_ENV: &str = "FLYTE_SLURM_SSH_PRIVATE_KEY";

/// The connection key holding the private key.
pub const PRIVATE_KEY_SECRET: &str = "ssh_private_key";
/// The connection key holding known_hosts lines.
pub const KNOWN_HOSTS_SECRET: &str = "known_hosts_data";

/// Jobs' folder when neither the task nor the connector names one;
/// relative to the user's home.
pub const DEFAULT_WORKING_DIR: &str = ".flyte/jobs";

/// The template's `custom`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Custom {
    pub connection: Option<TaskConnection>,
    /// First-class `#SBATCH` settings, by the Python field names
    /// (`cpus_per_task`, `time_limit`, ...).
    pub sbatch: Option<Map<String, Value>>,
    /// Further `#SBATCH` options, by their sbatch names.
    pub sbatch_options: Option<Map<String, Value>>,
    pub container: Option<ContainerSettings>,
    /// Exported to the job, over the template's and the execution's.
    pub env: Option<Map<String, Value>>,
    pub modules: Option<Vec<String>>,
    pub working_dir: Option<String>,
    /// A `slurm_script` task's script.
    pub script: Option<String>,
    /// A `slurm_script` task's outputs: name → `"file"` or `"directory"`.
    pub outputs: Option<Map<String, Value>>,
    /// `"connector"` (the default) or `"job"`.
    pub output_upload: Option<String>,
}

/// `custom.connection`: where the task would like to run.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskConnection {
    pub host: Option<String>,
    pub username: Option<String>,
    pub port: Option<Value>,
    pub known_hosts: Option<String>,
    pub skip_host_key_verification: Option<Value>,
}

/// `custom.container`: how a `slurm` task's image runs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerSettings {
    pub runtime: Option<String>,
    pub args: Option<Vec<String>>,
    pub image: Option<String>,
    pub mounts: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub srun_args: Option<Vec<String>>,
}

/// Where and as whom a job is submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub username: String,
    pub port: u16,
    /// The known_hosts path to record in the resource meta.
    pub known_hosts: Option<String>,
}

/// An environment variable of the connector, `None` when unset or empty
/// (as Python's `os.getenv(NAME) or ...` falls through).
pub fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

impl Custom {
    /// The host, user and port, the connector's settings winning over the
    /// task's.
    pub fn target(&self) -> Result<Target, Error> {
        let task = self.connection.as_ref();
        let pick = |env: &str, task_value: Option<&String>| {
            setting(env).or_else(|| task_value.filter(|v| !v.is_empty()).cloned())
        };
        let host = pick(HOST_ENV, task.and_then(|c| c.host.as_ref()));
        let username = pick(USERNAME_ENV, task.and_then(|c| c.username.as_ref()));
        let (Some(host), Some(username)) = (host, username) else {
            return Err(Error::invalid_request(format!(
                "Missing Slurm connection details. Set `host` and `username` on the Slurm \
                 config, or set {HOST_ENV} and {USERNAME_ENV} on the connector."
            )));
        };
        let port = match setting(PORT_ENV) {
            Some(raw) => parse_port(&raw, PORT_ENV)?,
            None => match task.and_then(|c| c.port.as_ref()) {
                None | Some(Value::Null) => 22,
                Some(value) => port_of(value)?,
            },
        };
        let known_hosts = pick(KNOWN_HOSTS_ENV, task.and_then(|c| c.known_hosts.as_ref()));
        Ok(Target {
            host,
            username,
            port,
            known_hosts,
        })
    }

    /// Whether the task asks to skip host-key verification, which only the
    /// deployment may do (the manifest's `[ssh]`).
    pub fn asks_to_skip_host_keys(&self) -> bool {
        self.connection
            .as_ref()
            .and_then(|c| c.skip_host_key_verification.as_ref())
            .is_some_and(|v| match v {
                Value::Bool(b) => *b,
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
            })
    }

    /// The jobs' folder: the task's, else the connector's, else
    /// [`DEFAULT_WORKING_DIR`].
    pub fn working_dir(&self) -> String {
        self.working_dir
            .clone()
            .filter(|dir| !dir.is_empty())
            .or_else(|| setting(WORKING_DIR_ENV))
            .unwrap_or_else(|| DEFAULT_WORKING_DIR.to_owned())
    }
}

/// A port given as text, as Python's `int()` reads it (spaces around, a
/// `+`, `_` between digits).
fn parse_port(raw: &str, name: &str) -> Result<u16, Error> {
    let text = raw.trim().trim_start_matches('+');
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    let valid = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && !text.starts_with('_')
        && !text.ends_with('_')
        && !text.contains("__");
    let port = if valid {
        digits.parse::<u16>().ok()
    } else {
        None
    };
    port.filter(|p| *p != 0).ok_or_else(|| {
        Error::invalid_request(format!(
            "{name}={raw:?} is not a port: give a number from 1 to 65535"
        ))
    })
}

/// `connection.port` of the task: a number (a float, through the Struct)
/// or text.
fn port_of(value: &Value) -> Result<u16, Error> {
    let port = match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f <= 65535.0)
            // In range and whole: exact.
            .map(|f| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let port = f as u16;
                port
            }),
        Value::String(s) => parse_port(s, "connection.port").ok(),
        _ => None,
    };
    port.ok_or_else(|| {
        Error::invalid_request(format!(
            "the Slurm config's port {value} is not a port: give a number from 1 to 65535"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn custom(value: Value) -> Custom {
        serde_json::from_value(value).expect("custom")
    }

    #[test]
    fn the_tasks_connection_is_read_with_struct_numbers() {
        let c =
            custom(json!({"connection": {"host": "login", "username": "flyte", "port": 2222.0}}));
        assert_eq!(
            c.target().expect("target"),
            Target {
                host: "login".into(),
                username: "flyte".into(),
                port: 2222,
                known_hosts: None
            }
        );
        let c = custom(json!({"connection": {"host": "login", "username": "flyte"}}));
        assert_eq!(c.target().expect("target").port, 22);
    }

    #[test]
    fn a_missing_host_or_user_names_both_ways_to_give_them() {
        let err = custom(json!({"connection": {"host": "login"}}))
            .target()
            .expect_err("no user");
        assert!(
            err.message()
                .starts_with("Missing Slurm connection details."),
            "{err:?}"
        );
        assert!(err.message().contains(USERNAME_ENV));
    }

    #[test]
    fn ports_are_checked() {
        assert_eq!(parse_port(" +2_222 ", "P").expect("port"), 2222);
        for bad in ["", "x", "0", "70000", "22.5", "_22"] {
            assert!(parse_port(bad, "P").is_err(), "{bad}");
        }
        assert!(port_of(&json!(22.5)).is_err());
        assert_eq!(port_of(&json!("2022")).expect("port"), 2022);
    }

    #[test]
    fn nulls_read_as_absent() {
        let c = custom(
            json!({"container": {"image": null, "args": [], "workdir": null},
                              "modules": null, "sbatch": {}, "env": {}}),
        );
        assert!(c.container.as_ref().expect("container").image.is_none());
        assert_eq!(c.working_dir(), DEFAULT_WORKING_DIR);
    }

    #[test]
    fn only_the_deployment_skips_host_keys_but_a_task_asking_is_noticed() {
        assert!(
            custom(json!({"connection": {"skip_host_key_verification": true}}))
                .asks_to_skip_host_keys()
        );
        assert!(!custom(json!({"connection": {}})).asks_to_skip_host_keys());
    }
}
