//! A plugin's manifest: `NAME.toml` beside `NAME.wasm`, granting the
//! component what the sandbox denies by default.
//!
//! ```toml
//! allowed_hosts = ["bigquery.googleapis.com", "https://*.example.com", "http://127.0.0.1:8080"]
//! memory_mb = 256
//! timeout_seconds = 30
//! instance_reuse = "connection"
//! max_concurrent_calls = 64
//!
//! [http]
//! connect_timeout_seconds = 5
//! first_byte_timeout_seconds = 30
//! between_bytes_timeout_seconds = 30
//! max_response_mb = 8
//!
//! [env]
//! REGION = "us-east1"
//! ```
//!
//! This module reads the file and the keys every plugin has (`memory_mb`,
//! `timeout_seconds`, `instance_reuse`, `max_concurrent_calls`, `[env]`). Every other key belongs to
//! a capability of the runtime (`allowed_hosts` and `[http]` to outbound HTTP,
//! `[credentials]` to credentials from the pod), which parses its own
//! section and rejects what it cannot use; a key no capability owns is an
//! error there.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file exists but could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// The manifest's path.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("invalid manifest {path}: {source}")]
    Parse {
        /// The manifest's path.
        path: String,
        /// What went wrong.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid manifest {path}: {message}")]
    Invalid {
        /// The manifest's path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// How many calls of one tenant an instance of the async world serves at
/// once unless its manifest says (`max_concurrent_calls`).
pub const DEFAULT_CONCURRENT_CALLS: usize = 64;
/// The most a manifest may ask for.
const MAX_CONCURRENT_CALLS: u32 = 1024;

/// What a plugin may do beyond the default sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Linear-memory cap per call, overriding the server default.
    pub memory_bytes: Option<usize>,
    /// Deadline per call, overriding the server default.
    pub timeout: Option<Duration>,
    /// Environment variables the component sees.
    pub env: BTreeMap<String, String>,
    /// Whether a finished call's instance may serve later calls.
    pub instance_reuse: InstanceReuse,
    /// The most calls of one tenant one instance serves at once, for a
    /// component of the async world with `instance_reuse = "connection"`.
    pub max_concurrent_calls: usize,
    /// Every other top-level key, as written: the sections of the
    /// capabilities the runtime grants, each parsed by its owner.
    pub sections: toml::Table,
    /// The manifest's folder, against which relative file paths in its
    /// sections are resolved (the working directory when there is none).
    pub folder: PathBuf,
}

/// Whether an instance may serve more than one call (`instance_reuse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InstanceReuse {
    /// `"never"`: every call runs in a fresh instance.
    #[default]
    Never,
    /// `"connection"`: a finished call's instance may serve later calls
    /// with the same connection map (secrets and configs), and no others.
    Connection,
}

impl InstanceReuse {
    fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("never") => Ok(Self::Never),
            Some("connection") => Ok(Self::Connection),
            Some(other) => Err(format!(
                "instance_reuse = {other:?}: expected \"never\" or \"connection\""
            )),
        }
    }
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            memory_bytes: None,
            timeout: None,
            env: BTreeMap::new(),
            instance_reuse: InstanceReuse::default(),
            max_concurrent_calls: DEFAULT_CONCURRENT_CALLS,
            sections: toml::Table::new(),
            folder: PathBuf::new(),
        }
    }
}

impl Manifest {
    /// `path` as a section names it, resolved against the manifest's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.folder.join(path)
    }
}

#[derive(Deserialize)]
struct ManifestFile {
    memory_mb: Option<u64>,
    timeout_seconds: Option<f64>,
    instance_reuse: Option<String>,
    max_concurrent_calls: Option<u32>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(flatten)]
    sections: toml::Table,
}

impl Manifest {
    /// Reads the manifest beside `wasm_path` (same stem, `.toml`); the default
    /// manifest when there is none.
    pub fn for_component(wasm_path: &Path) -> Result<Self, ManifestError> {
        let path = wasm_path.with_extension("toml");
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ManifestError::Read {
                    path: shown,
                    source,
                });
            }
        };
        let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, folder).map_err(|err| match err {
            ParseError::Toml(source) => ManifestError::Parse {
                path: shown,
                source,
            },
            ParseError::Invalid(message) => ManifestError::Invalid {
                path: shown,
                message,
            },
        })
    }

    /// Parses manifest text; relative paths in it are resolved against `folder`.
    pub fn parse(text: &str, folder: PathBuf) -> Result<Self, ParseError> {
        let file: ManifestFile = toml::from_str(text).map_err(ParseError::Toml)?;
        let memory_bytes = file
            .memory_mb
            .map(|mb| {
                mb.checked_mul(1024 * 1024)
                    .and_then(|bytes| usize::try_from(bytes).ok())
                    .filter(|&bytes| bytes > 0)
                    .ok_or_else(|| ParseError::Invalid(format!("memory_mb = {mb} is out of range")))
            })
            .transpose()?;
        let timeout =
            seconds("timeout_seconds", file.timeout_seconds).map_err(ParseError::Invalid)?;
        let instance_reuse =
            InstanceReuse::parse(file.instance_reuse.as_deref()).map_err(ParseError::Invalid)?;
        let max_concurrent_calls = match file.max_concurrent_calls {
            None => DEFAULT_CONCURRENT_CALLS,
            Some(calls @ 1..=MAX_CONCURRENT_CALLS) => calls as usize,
            Some(calls) => {
                return Err(ParseError::Invalid(format!(
                    "max_concurrent_calls = {calls}: expected 1 to {MAX_CONCURRENT_CALLS}"
                )));
            }
        };
        Ok(Self {
            memory_bytes,
            timeout,
            env: file.env,
            instance_reuse,
            max_concurrent_calls,
            sections: file.sections,
            folder,
        })
    }
}

/// Why manifest text could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// Not TOML, or a key of the wrong type.
    Toml(toml::de::Error),
    /// A value out of range.
    Invalid(String),
}

/// The longest duration a manifest or a flag may give: a day. Longer ones
/// are refused rather than risk overflowing a deadline computed from them.
pub const MAX_SECONDS: u64 = 24 * 60 * 60;

/// `secs` as a duration, if it is positive and at most [`MAX_SECONDS`].
pub fn bounded_seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(MAX_SECONDS))
}

/// A positive number of seconds, at most [`MAX_SECONDS`], for key `key`.
pub fn seconds(key: &str, value: Option<f64>) -> Result<Option<Duration>, String> {
    value
        .map(|secs| {
            bounded_seconds(secs).ok_or_else(|| {
                format!("{key} = {secs} is out of range (more than 0, at most {MAX_SECONDS})")
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ParseError> {
        Manifest::parse(text, PathBuf::from("/plugins"))
    }

    #[test]
    fn full_manifest_parses_leaving_capability_sections_to_their_owners() {
        let manifest = parse(
            r#"
            allowed_hosts = ["api.example.com", "*.googleapis.com"]
            memory_mb = 64
            timeout_seconds = 1.5
            [http]
            connect_timeout_seconds = 2
            [env]
            REGION = "eu"
            "#,
        )
        .expect("valid manifest");
        assert_eq!(manifest.memory_bytes, Some(64 * 1024 * 1024));
        assert_eq!(manifest.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(manifest.env.get("REGION").map(String::as_str), Some("eu"));
        let keys: Vec<&str> = manifest.sections.keys().map(String::as_str).collect();
        assert_eq!(keys, ["allowed_hosts", "http"]);
        assert_eq!(
            manifest.resolve(Path::new("ca.pem")),
            Path::new("/plugins/ca.pem")
        );
        assert_eq!(
            manifest.resolve(Path::new("/etc/ca.pem")),
            Path::new("/etc/ca.pem")
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse("memory_mb = 0").is_err());
        assert!(parse("memory_mb = \"x\"").is_err());
        assert!(parse("timeout_seconds = -1").is_err());
        match parse("timeout_seconds = 1.8e19") {
            Err(ParseError::Invalid(message)) => {
                assert!(message.contains("timeout_seconds"), "{message}")
            }
            other => panic!("accepted or wrong error: {other:?}"),
        }
        assert!(parse("timeout_seconds = 86400").is_ok());
        assert!(parse("[env]\nA = 1").is_err());
    }

    #[test]
    fn instance_reuse_is_opted_into_by_name() {
        assert_eq!(
            parse("").expect("empty").instance_reuse,
            InstanceReuse::Never
        );
        assert_eq!(
            parse("instance_reuse = \"never\"")
                .expect("never")
                .instance_reuse,
            InstanceReuse::Never
        );
        assert_eq!(
            parse("instance_reuse = \"connection\"")
                .expect("connection")
                .instance_reuse,
            InstanceReuse::Connection
        );
        match parse("instance_reuse = \"sometimes\"") {
            Err(ParseError::Invalid(message)) => assert_eq!(
                message,
                r#"instance_reuse = "sometimes": expected "never" or "connection""#
            ),
            other => panic!("accepted or wrong error: {other:?}"),
        }
    }
}
