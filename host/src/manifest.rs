//! A plugin's manifest: `NAME.toml` beside `NAME.wasm`, granting the
//! component what the sandbox denies by default.
//!
//! ```toml
//! allowed_hosts = ["bigquery.googleapis.com", "https://*.example.com", "http://127.0.0.1:8080"]
//! memory_mb = 256
//! timeout_seconds = 30
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
//! This module reads the file; what a grant means (the syntax of
//! `allowed_hosts`, the defaults of `[http]`) belongs to the runtime
//! capability that enforces it, which rejects what it cannot use.

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
    /// Rules of the hosts outbound HTTP may reach, as written.
    pub allowed_hosts: Vec<String>,
    /// `[http]`: limits of outbound requests, over the server's defaults.
    pub http: HttpSettings,
    /// Linear-memory cap per call, overriding the server default.
    pub memory_bytes: Option<usize>,
    /// Deadline per call, overriding the server default.
    pub timeout: Option<Duration>,
    /// Environment variables the component sees.
    pub env: BTreeMap<String, String>,
}

/// The `[http]` table: each limit, when set, replaces the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpSettings {
    /// How long to wait for a connection.
    pub connect_timeout: Option<Duration>,
    /// How long to wait for the first byte of a response.
    pub first_byte_timeout: Option<Duration>,
    /// How long to wait between bytes of a response body.
    pub between_bytes_timeout: Option<Duration>,
    /// The largest response body, in bytes.
    pub max_response_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    connect_timeout_seconds: Option<f64>,
    first_byte_timeout_seconds: Option<f64>,
    between_bytes_timeout_seconds: Option<f64>,
    max_response_mb: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    http: HttpFile,
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
        let timeout = seconds("timeout_seconds", file.timeout_seconds)?;
        let http = HttpSettings {
            connect_timeout: seconds(
                "http.connect_timeout_seconds",
                file.http.connect_timeout_seconds,
            )?,
            first_byte_timeout: seconds(
                "http.first_byte_timeout_seconds",
                file.http.first_byte_timeout_seconds,
            )?,
            between_bytes_timeout: seconds(
                "http.between_bytes_timeout_seconds",
                file.http.between_bytes_timeout_seconds,
            )?,
            max_response_bytes: file
                .http
                .max_response_mb
                .map(|mb| {
                    mb.checked_mul(1024 * 1024)
                        .filter(|&bytes| bytes > 0)
                        .ok_or_else(|| {
                            ParseError::Invalid(format!(
                                "http.max_response_mb = {mb} is out of range"
                            ))
                        })
                })
                .transpose()?,
        };
        Ok(Self {
            allowed_hosts: file.allowed_hosts,
            http,
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

/// A positive number of seconds, for key `key`.
fn seconds(key: &str, value: Option<f64>) -> Result<Option<Duration>, ParseError> {
    value
        .map(|secs| {
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ParseError::Invalid(format!("{key} = {secs} is out of range")))
        })
        .transpose()
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
            [http]
            connect_timeout_seconds = 2
            max_response_mb = 3
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
        assert_eq!(manifest.http.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(manifest.http.first_byte_timeout, None);
        assert_eq!(manifest.http.max_response_bytes, Some(3 << 20));
        assert_eq!(manifest.env.get("REGION").map(String::as_str), Some("eu"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(Manifest::parse("allowed_host = []").is_err());
        assert!(Manifest::parse("memory_mb = 0").is_err());
        assert!(Manifest::parse("timeout_seconds = -1").is_err());
        assert!(Manifest::parse("[http]\nconnect_timeout = 1").is_err());
        assert!(Manifest::parse("[http]\nfirst_byte_timeout_seconds = 0").is_err());
    }
}
