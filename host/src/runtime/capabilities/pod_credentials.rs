//! Credentials from the pod: the manifest's `[credentials]` maps connection
//! keys to a value the host reads for the connector, from an environment
//! variable of the server or from a file (a Kubernetes Secret volume):
//!
//! ```toml
//! [credentials]
//! databricks_token = { file = "/etc/secrets/databricks_token" }
//! snowflake_private_key = { env = "SNOWFLAKE_PRIVATE_KEY" }
//! ```
//!
//! A value is merged into a call's connection map only where the request
//! does not carry that key, so a task's own connection always wins. Values
//! are read at load, and files again on reload (a rotated Secret reloads the
//! plugin); one trailing newline of a file is dropped. A variable that is
//! not set or a file that does not exist provides nothing (a Secret may lack
//! keys), logged at load; a file that cannot be read fails the load. Values
//! never reach logs, metrics or messages: only keys do.
//!
//! The values fill every call's connection, `get-metrics` and `get-logs`
//! included (their gRPC requests carry no connection of their own).

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc};

use serde::Deserialize;

use super::capability::{CallArgs, Capability, GrantError, InstanceScope, LoadScope};
use super::config_error::ConfigError;

/// The manifest key this capability owns.
const SECTION: &str = "credentials";

/// Where one connection key's value comes from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueSource {
    env: Option<String>,
    file: Option<PathBuf>,
}

/// The capability: reads `[credentials]`.
pub struct PodCredentials;

/// Its flags: none (what manifests may read is `CredentialArgs`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PodCredentialsArgs {}

/// Its settings: none.
#[derive(Debug, Clone, Default)]
pub struct PodCredentialsConfig {}

/// A value read for a connector: shown nowhere.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One plugin's credentials from the pod, by connection key.
#[derive(Debug, Clone, Default)]
pub struct PodCredentialsGrant {
    values: Arc<BTreeMap<String, Secret>>,
}

impl Capability for PodCredentials {
    const MANIFEST_KEYS: &'static [&'static str] = &[SECTION];
    type Args = PodCredentialsArgs;
    type Config = PodCredentialsConfig;
    type Grant = PodCredentialsGrant;
    type State = ();

    fn configure(_args: Self::Args) -> Result<Self::Config, ConfigError> {
        Ok(PodCredentialsConfig {})
    }

    fn new(
        _config: &Self::Config,
        _metrics: &crate::metrics::MetricRegistry,
    ) -> anyhow::Result<Self> {
        Ok(Self)
    }

    fn grant(&self, load: &mut LoadScope<'_>) -> Result<Self::Grant, GrantError> {
        let sources: BTreeMap<String, ValueSource> = load.section(SECTION)?.unwrap_or_default();
        let mut values = BTreeMap::new();
        for (key, source) in sources {
            let shown = format!("{SECTION}.{key}");
            let value = match (source.env, source.file) {
                (Some(var), None) => {
                    let value = load.read_env(&shown, &var)?;
                    if value.is_none() {
                        tracing::info!(
                            "{shown}: environment variable {var} is not set; the key is not provided"
                        );
                    }
                    value
                }
                (None, Some(path)) => match load.read_file_if_present(&shown, &path)? {
                    Some(bytes) => Some(file_value(&shown, bytes)?),
                    None => {
                        tracing::info!(
                            "{shown}: {} does not exist; the key is not provided",
                            path.display()
                        );
                        None
                    }
                },
                _ => {
                    return Err(GrantError::invalid(
                        shown,
                        "give exactly one of `env` (a variable of the server) or `file`",
                    ));
                }
            };
            if let Some(value) = value {
                values.insert(key, Secret(value));
            }
        }
        Ok(PodCredentialsGrant {
            values: Arc::new(values),
        })
    }

    fn instance_state(_grant: &Self::Grant, _instance: &InstanceScope) -> Self::State {}

    /// Adds each value whose key the call's connection lacks: a task's own
    /// connection always wins.
    fn shape_call(grant: &Self::Grant, call: &mut CallArgs<'_>) {
        for (key, Secret(value)) in grant.values.iter() {
            call.connection
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
    }

    fn fills_connection(grant: &Self::Grant) -> bool {
        !grant.values.is_empty()
    }
}

/// A file's contents as a value: UTF-8, without one trailing newline.
fn file_value(shown: &str, bytes: Vec<u8>) -> Result<String, GrantError> {
    let mut text = String::from_utf8(bytes)
        .map_err(|_| GrantError::invalid(shown, "the file is not UTF-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        connector::ConnectionMap, manifest::Manifest,
        runtime::capabilities::credential_roots::CredentialRoots,
    };

    /// The grant of manifest `text` in `folder`, which is also the one
    /// credential folder; variables starting `PA` may be read.
    fn grant(text: &str, folder: &Path) -> Result<PodCredentialsGrant, String> {
        let manifest = Manifest::parse(text, folder.to_owned()).map_err(|e| format!("{e:?}"))?;
        let roots = CredentialRoots::new(vec![folder.to_owned()], vec!["PA".to_owned()])
            .map_err(|e| e.to_string())?;
        PodCredentials
            .grant(&mut LoadScope::new(&manifest, &roots))
            .map_err(|e| e.to_string())
    }

    fn fill(grant: &PodCredentialsGrant, connection: &mut ConnectionMap) {
        PodCredentials::shape_call(grant, &mut CallArgs { connection });
    }

    #[test]
    fn values_fill_only_the_keys_a_request_lacks() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("token"), "from-file\n").expect("write");
        let path = std::env::var("PATH").expect("PATH is set");
        let grant = grant(
            "[credentials]\ntoken = { file = \"token\" }\nkey = { env = \"PATH\" }\npath = { env = \"PATH\" }\n\
             absent = { file = \"nothing-here\" }\nunset = { env = \"PA_CREDENTIALS_TEST_UNSET\" }\n",
            dir.path(),
        )
        .expect("grant");
        let mut connection = ConnectionMap::from([("key".to_owned(), "the request's".to_owned())]);
        fill(&grant, &mut connection);
        assert_eq!(
            connection,
            ConnectionMap::from([
                ("key".to_owned(), "the request's".to_owned()),
                ("path".to_owned(), path.clone()),
                ("token".to_owned(), "from-file".to_owned()),
            ])
        );
        let shown = format!("{grant:?}");
        assert!(
            !shown.contains("from-file") && !shown.contains(&path),
            "{shown}"
        );
    }

    #[test]
    fn a_source_names_exactly_one_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        for text in [
            "[credentials]\nt = {}\n",
            "[credentials]\nt = { env = \"A\", file = \"b\" }\n",
            "[credentials]\nt = { path = \"b\" }\n",
            "[credentials]\nt = \"inline\"\n",
        ] {
            let err = grant(text, dir.path()).expect_err(text);
            assert!(err.contains("credentials"), "{text}: {err}");
        }
    }

    #[test]
    fn what_the_operator_did_not_allow_fails_the_load_naming_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (text, named) in [
            (
                "[credentials]\nk = { file = \"/etc/hostname\" }\n",
                "credentials.k",
            ),
            (
                "[credentials]\nk = { file = \"../escape\" }\n",
                "--credentials-dir",
            ),
            (
                "[credentials]\nk = { env = \"HOME\" }\n",
                "--credentials-env-prefix",
            ),
            (
                "[credentials]\nk = { env = \"PA_PROXY\", file = \"x\" }\n",
                "credentials.k",
            ),
        ] {
            let err = grant(text, dir.path()).expect_err(text);
            assert!(err.contains(named), "{text}: {err}");
        }
    }

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(
            file_value("k", b"v\r\n".to_vec()).ok(),
            Some("v".to_owned())
        );
        assert_eq!(
            file_value("k", b"v\n\n".to_vec()).ok(),
            Some("v\n".to_owned())
        );
        assert!(file_value("k", vec![0xff]).is_err());
    }
}
