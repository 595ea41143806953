//! A `slurm_script` task's declared outputs: where the job writes each
//! (`FLYTE_OUTPUT_<NAME>`), and how a finished job's outputs reach their
//! URIs — moved by the host from the cluster (`output_upload =
//! "connector"`, the default) or uploaded by the job itself (`"job"`), as
//! `flyteplugins-slurm` does, but with the transfer's state in the host's
//! storage capability rather than in one process: every replica that polls
//! a finished job answers alike.

use std::collections::BTreeMap;

use flyte_connector_sdk::{
    Error, Output, Outputs,
    ssh::Session,
    storage::{self, Transfer},
};
use serde_json::{Map, Value};

use crate::{
    DeclaredOutput,
    custom::setting,
    script::{env_suffix, path_join},
    shell::string_repr,
};

/// The most bytes the connector moves for a job, unless the deployment says.
pub const UPLOAD_MAX_ENV: &str = "FLYTE_SLURM_CONNECTOR_UPLOAD_MAX_BYTES";
const DEFAULT_UPLOAD_MAX: u64 = 100 << 20;

/// A task's declared outputs.
pub struct Declared {
    /// Each output, with where the job writes it.
    pub outputs: BTreeMap<String, DeclaredOutput>,
    /// `FLYTE_OUTPUT_<NAME>` naming those places.
    pub env: BTreeMap<String, String>,
}

/// The declared outputs of a task, with where the job writes them.
pub fn declare(
    outputs: &Map<String, Value>,
    upload: Option<&str>,
    output_prefix: &str,
    local_dir: &str,
) -> Result<Declared, Error> {
    let upload = match upload.filter(|u| !u.is_empty()) {
        None | Some("connector") => "connector",
        Some("job") => "job",
        Some(other) => {
            return Err(Error::invalid_request(format!(
                "output_upload must be 'connector' or 'job', not {}",
                string_repr(other)
            )));
        }
    };
    if !outputs.is_empty() && output_prefix.is_empty() {
        return Err(Error::invalid_request(
            "the task declares outputs, and the request names no output prefix to put them under",
        ));
    }
    let mut declared = BTreeMap::new();
    let mut env = BTreeMap::new();
    for (name, kind) in outputs {
        let kind = match kind.as_str() {
            Some(kind @ ("file" | "directory")) => kind,
            _ => {
                return Err(Error::invalid_request(format!(
                    "output {} is declared as {kind}; a script's outputs are \"file\" or \
                     \"directory\"",
                    string_repr(name)
                )));
            }
        };
        let uri = format!("{}/{name}", output_prefix.trim_end_matches('/'));
        let written_to = if upload == "connector" {
            path_join(local_dir.trim_end_matches('/'), name)
        } else {
            uri.clone()
        };
        env.insert(
            format!("FLYTE_OUTPUT_{}", env_suffix(name)),
            written_to.clone(),
        );
        declared.insert(
            name.clone(),
            DeclaredOutput {
                uri,
                kind: kind.to_owned(),
                upload: upload.to_owned(),
                written_to,
            },
        );
    }
    Ok(Declared {
        outputs: declared,
        env,
    })
}

/// The connector's upload ceiling: `FLYTE_SLURM_CONNECTOR_UPLOAD_MAX_BYTES`
/// (a byte count, optionally suffixed: `500MB`, `2GB`, `512MiB`; `0`,
/// `none` or `unlimited` for none), 100 MiB unless set.
pub fn upload_max() -> Result<Option<u64>, Error> {
    match setting(UPLOAD_MAX_ENV) {
        Some(raw) if !raw.trim().is_empty() => parse_size(&raw),
        _ => Ok(Some(DEFAULT_UPLOAD_MAX)),
    }
}

fn parse_size(raw: &str) -> Result<Option<u64>, Error> {
    let text = raw.trim();
    if matches!(text.to_lowercase().as_str(), "unlimited" | "none") {
        return Ok(None);
    }
    const SUFFIXES: [(&str, u64); 9] = [
        ("KIB", 1 << 10),
        ("MIB", 1 << 20),
        ("GIB", 1 << 30),
        ("TIB", 1 << 40),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
        ("B", 1),
    ];
    let upper = text.to_uppercase();
    let (digits, multiplier) = SUFFIXES
        .iter()
        .find(|(suffix, _)| upper.ends_with(suffix))
        .map_or((text, 1), |(suffix, multiplier)| {
            (text[..text.len() - suffix.len()].trim(), *multiplier)
        });
    let not_a_size = || {
        Error::invalid_request(format!(
            "{UPLOAD_MAX_ENV}={} is not a size. Give a byte count, optionally suffixed (500MB, \
             2GB, 512MiB), or 0 for no limit.",
            string_repr(raw)
        ))
    };
    let negative = digits.trim_start().starts_with('-');
    let cleaned: String = digits
        .trim()
        .trim_start_matches(['+', '-'])
        .chars()
        .filter(|c| *c != '_')
        .collect();
    if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_ascii_digit()) {
        return Err(not_a_size());
    }
    let value: u64 = cleaned.parse().map_err(|_| not_a_size())?;
    if negative && value > 0 {
        return Err(Error::invalid_request(format!(
            "{UPLOAD_MAX_ENV}={} is negative. Use 0 for no limit.",
            string_repr(raw)
        )));
    }
    let bytes = value.checked_mul(multiplier).ok_or_else(not_a_size)?;
    Ok((bytes > 0).then_some(bytes))
}

/// What collecting a finished job's outputs came to.
pub enum Collected {
    /// Every output is complete at its URI.
    Done(Outputs),
    /// Still being moved: the message's line.
    Moving(String),
    /// The job did not produce them as declared: why.
    Failed(String),
}

/// Collects the outputs of finished job `job_id`: moves what the connector
/// moves (or joins the move in flight), checks what the job uploaded.
pub fn collect(
    session: &Session,
    job_id: &str,
    declared: &BTreeMap<String, DeclaredOutput>,
) -> Result<Collected, Error> {
    let max = if declared.values().any(|o| o.upload == "connector") {
        upload_max()?
    } else {
        None
    };
    let mut missing = Vec::new();
    let mut moving = false;
    for (name, output) in declared {
        if output.upload == "job" {
            if !storage::exists(&output.uri)? {
                missing.push(format!("{name} at {}", output.uri));
            }
            continue;
        }
        match storage::copy_from_ssh(session, &output.written_to, &output.uri, max)? {
            Transfer::Done(_) => {}
            Transfer::Moving { .. } => moving = true,
            Transfer::Missing => missing.push(format!("{name} at {}", output.written_to)),
            Transfer::TooLarge(size) => {
                return Ok(Collected::Failed(too_large(name, job_id, size, max)));
            }
            Transfer::Failed(why) => {
                return Err(Error::retryable(format!(
                    "moving output {name} of Slurm job {job_id} to {} failed: {why}. The next \
                     poll moves it again.",
                    output.uri
                )));
            }
        }
    }
    if !missing.is_empty() {
        return Ok(Collected::Failed(format!(
            "Slurm job {job_id} succeeded but did not write every declared output: {}. The \
             script is given each destination as FLYTE_OUTPUT_<NAME> and must write there.",
            missing.join("; ")
        )));
    }
    if moving {
        let names: Vec<&str> = declared.keys().map(String::as_str).collect();
        return Ok(Collected::Moving(format!(
            "Job finished; the connector is moving its declared outputs ({}) to object storage.",
            names.join(", ")
        )));
    }
    let mut outputs = Outputs::new();
    for (name, output) in declared {
        let literal = if output.kind == "directory" {
            Output::directory(&output.uri, "")
        } else {
            Output::file(&output.uri, "")
        };
        outputs.insert_output(name.clone(), literal);
    }
    Ok(Collected::Done(outputs))
}

fn too_large(name: &str, job_id: &str, size: u64, max: Option<u64>) -> String {
    let megabytes = |bytes: u64| format!("{:.0}", bytes as f64 / 1e6);
    format!(
        "Output {} of Slurm job {job_id} is {} MB, above the {} MB the connector will move on a \
         job's behalf. Set output_upload='job' on the task and have the script upload to the URI \
         it is given in FLYTE_OUTPUT_<NAME> -- with `aws s3 cp`, `rclone copyto`, `gcloud \
         storage cp` or whatever the cluster has -- so the bytes go straight from the compute \
         node to object storage. A platform team that wants the connector to carry more can \
         raise {UPLOAD_MAX_ENV} on the connector deployment, bearing in mind the pod is shared \
         with every other job it polls.",
        string_repr(name),
        megabytes(size),
        megabytes(max.unwrap_or(0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_are_read_as_the_python_connector_reads_them() {
        for (raw, bytes) in [
            ("100MB", Some(100_000_000)),
            ("512MiB", Some(536_870_912)),
            (" 5 kb ", Some(5_000)),
            ("10b", Some(10)),
            ("1_000", Some(1_000)),
            ("+7", Some(7)),
            ("0", None),
            ("0MB", None),
            ("unlimited", None),
            ("None", None),
        ] {
            assert_eq!(parse_size(raw).expect(raw), bytes, "{raw}");
        }
        assert_eq!(
            parse_size("1.5GB").expect_err("a fraction").message(),
            "FLYTE_SLURM_CONNECTOR_UPLOAD_MAX_BYTES='1.5GB' is not a size. Give a byte count, \
             optionally suffixed (500MB, 2GB, 512MiB), or 0 for no limit."
        );
        assert!(
            parse_size("-5")
                .expect_err("negative")
                .message()
                .ends_with("is negative. Use 0 for no limit.")
        );
    }

    #[test]
    fn outputs_are_declared_where_the_upload_mode_says() {
        let outputs = json!({"model": "file", "shards": "directory"});
        let outputs = outputs.as_object().expect("map");
        let Declared {
            outputs: declared,
            env,
        } = declare(outputs, None, "s3://bucket/out/prefix/", "/w/j.outputs").expect("declared");
        assert_eq!(
            declared["model"],
            DeclaredOutput {
                uri: "s3://bucket/out/prefix/model".into(),
                kind: "file".into(),
                upload: "connector".into(),
                written_to: "/w/j.outputs/model".into(),
            }
        );
        assert_eq!(env["FLYTE_OUTPUT_SHARDS"], "/w/j.outputs/shards");
        let Declared {
            outputs: declared,
            env,
        } = declare(outputs, Some("job"), "s3://bucket/out", "/w/j.outputs").expect("declared");
        assert_eq!(declared["model"].written_to, "s3://bucket/out/model");
        assert_eq!(env["FLYTE_OUTPUT_MODEL"], "s3://bucket/out/model");
        assert!(declare(outputs, Some("both"), "s3://b/o", "/w").is_err());
        assert!(declare(outputs, None, "", "/w").is_err());
    }

    #[test]
    fn the_too_large_message_is_the_python_connectors() {
        let message = too_large("model", "95", 250_000_000, Some(104_857_600));
        assert!(
            message.starts_with(
                "Output 'model' of Slurm job 95 is 250 MB, above the 105 MB the connector will \
                 move on a job's behalf."
            ),
            "{message}"
        );
    }
}
