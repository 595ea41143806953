//! A plugin's manifest: `NAME.toml` beside `NAME.wasm`, granting the
//! component what the sandbox denies by default.
//!
//! ```toml
//! allowed_hosts = ["bigquery.googleapis.com", "*.example.com"]
//! memory_mb = 256
//! timeout_seconds = 30
//!
//! [env]
//! REGION = "us-east1"
//! ```

use std::{collections::BTreeMap, path::Path, time::Duration};

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

/// What a plugin may do beyond the default sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Hosts outbound HTTP may reach: exact names, or `*.suffix` for subdomains.
    pub allowed_hosts: Vec<String>,
    /// Linear-memory cap per call, overriding the server default.
    pub memory_bytes: Option<usize>,
    /// Deadline per call, overriding the server default.
    pub timeout: Option<Duration>,
    /// Environment variables the component sees.
    pub env: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    allowed_hosts: Vec<String>,
    memory_mb: Option<u64>,
    timeout_seconds: Option<f64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
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
        Self::parse(&text).map_err(|err| match err {
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

    fn parse(text: &str) -> Result<Self, ParseError> {
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
        let timeout = file
            .timeout_seconds
            .map(|secs| {
                Duration::try_from_secs_f64(secs)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        ParseError::Invalid(format!("timeout_seconds = {secs} is out of range"))
                    })
            })
            .transpose()?;
        for host in &file.allowed_hosts {
            if host.is_empty() || host.contains(['/', ':', ' ']) {
                return Err(ParseError::Invalid(format!(
                    "allowed_hosts entry {host:?} is not a host name (write `api.example.com` or `*.example.com`)"
                )));
            }
        }
        Ok(Self {
            allowed_hosts: file.allowed_hosts,
            memory_bytes,
            timeout,
            env: file.env,
        })
    }
}

enum ParseError {
    Toml(toml::de::Error),
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_manifest_parses() {
        let manifest = Manifest::parse(
            r#"
            allowed_hosts = ["api.example.com", "*.googleapis.com"]
            memory_mb = 64
            timeout_seconds = 1.5
            [env]
            REGION = "eu"
            "#,
        )
        .ok()
        .expect("valid manifest");
        assert_eq!(
            manifest.allowed_hosts,
            ["api.example.com", "*.googleapis.com"]
        );
        assert_eq!(manifest.memory_bytes, Some(64 * 1024 * 1024));
        assert_eq!(manifest.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(manifest.env.get("REGION").map(String::as_str), Some("eu"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(Manifest::parse("allowed_host = []").is_err());
        assert!(Manifest::parse("memory_mb = 0").is_err());
        assert!(Manifest::parse("timeout_seconds = -1").is_err());
        assert!(Manifest::parse(r#"allowed_hosts = ["https://x.com"]"#).is_err());
    }
}
