//! What of the pod a plugin's manifest may read: files only under the
//! folders the operator names (`--credentials-dir`, by default
//! `/etc/secrets`, where Flyte's chart mounts the connector Secret), and
//! environment variables only with a prefix the operator names
//! (`--credentials-env-prefix`, none by default), never the proxy
//! variables, whose URLs carry the proxy's credentials.
//!
//! A manifest may come with a third party's component, so it is not
//! trusted to choose: without this, `[credentials] k = { file =
//! "/var/run/secrets/kubernetes.io/serviceaccount/token" }` would hand the
//! pod's Kubernetes token to a connector allowed to reach one outside host.
//! Every file a manifest names (credentials, `[[http.tls]]` CA files,
//! client certificates and keys) is checked here, after its symbolic links
//! are resolved: a Kubernetes Secret volume's files are links into its
//! `..data/` folder, inside the root, and keep working; a link pointing out
//! of a root is refused. Files the operator names on the command line
//! (`--ca-file`) are not manifests' and are read as given.

use std::{
    ffi::OsStr,
    path::{Component, Path, PathBuf},
};

use super::config_error::ConfigError;

/// The variables that configure the server's proxies: never readable by a
/// manifest, whatever the prefixes allow.
const PROXY_VARIABLES: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"];

/// Where credentials a manifest names may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRoots {
    /// Folders whose files (after resolving links) a manifest may read.
    pub dirs: Vec<PathBuf>,
    /// Prefixes of the environment variables a manifest may read.
    pub env_prefixes: Vec<String>,
}

impl Default for CredentialRoots {
    fn default() -> Self {
        Self {
            dirs: vec![PathBuf::from("/etc/secrets")],
            env_prefixes: Vec::new(),
        }
    }
}

/// Why a manifest may not read what it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The file is outside every credential folder.
    #[error(
        "{shown} is outside the folders the operator lets manifests read ({dirs}; \
         --credentials-dir)"
    )]
    OutsideRoots {
        /// The file, and where it leads if a link took it elsewhere.
        shown: String,
        /// The folders, as the flag gave them.
        dirs: String,
    },
    /// A proxy variable: its URL carries the proxy's credentials.
    #[error("{0} configures the server's proxy; no manifest may read it")]
    ProxyVariable(String),
    /// A variable no prefix allows.
    #[error(
        "environment variable {var} is not one the operator lets manifests read \
         (--credentials-env-prefix: {prefixes})"
    )]
    VariableNotAllowed {
        /// The variable.
        var: String,
        /// The prefixes allowed, or `none`.
        prefixes: String,
    },
}

/// The flags of what manifests may read of the pod.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CredentialArgs {
    /// A folder whose files (symbolic links resolved) manifests may name:
    /// credentials, CA files, client certificates and keys. Repeatable
    /// [default: /etc/secrets].
    #[arg(
        long = "credentials-dir",
        env = "FLYTE_CONNECT_CREDENTIALS_DIR",
        value_delimiter = ':'
    )]
    pub credentials_dirs: Vec<PathBuf>,

    /// A prefix of the server's environment variables manifests may name in
    /// `[credentials]` (the proxy variables never). Repeatable [default:
    /// none].
    #[arg(
        long = "credentials-env-prefix",
        env = "FLYTE_CONNECT_CREDENTIALS_ENV_PREFIX",
        value_delimiter = ','
    )]
    pub credentials_env_prefixes: Vec<String>,
}

impl CredentialArgs {
    /// The roots these flags name, the defaults where they name none.
    pub fn into_roots(self) -> Result<CredentialRoots, ConfigError> {
        let dirs = if self.credentials_dirs.is_empty() {
            CredentialRoots::default().dirs
        } else {
            self.credentials_dirs
        };
        CredentialRoots::new(dirs, self.credentials_env_prefixes)
    }
}

impl CredentialRoots {
    /// Roots made absolute against the working directory; an empty prefix
    /// (which would allow every variable) is refused.
    pub fn new(dirs: Vec<PathBuf>, env_prefixes: Vec<String>) -> Result<Self, ConfigError> {
        if env_prefixes.iter().any(|prefix| prefix.trim().is_empty()) {
            return Err(ConfigError {
                flag: "--credentials-env-prefix",
                reason: "an empty prefix would let manifests read every environment variable \
                         of the server"
                    .to_owned(),
            });
        }
        let dirs = dirs
            .iter()
            .map(|dir| {
                std::path::absolute(dir).map_err(|err| ConfigError {
                    flag: "--credentials-dir",
                    reason: format!("{}: {err}", dir.display()),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { dirs, env_prefixes })
    }

    /// The path to read for `path` (absolute), a file a manifest names: its
    /// links resolved, inside a root. A file that does not exist is judged
    /// by its path with `.` and `..` resolved, so it is refused or allowed
    /// alike whether it exists yet or not.
    pub fn file(&self, path: &Path) -> Result<PathBuf, Refusal> {
        let lexical = normalize(path);
        match std::fs::canonicalize(&lexical) {
            Ok(resolved) => {
                if self.canonical_dirs().any(|dir| resolved.starts_with(&dir)) {
                    Ok(resolved)
                } else {
                    let shown = if resolved == lexical {
                        path.display().to_string()
                    } else {
                        format!("{} (which leads to {})", path.display(), resolved.display())
                    };
                    Err(self.outside(shown))
                }
            }
            Err(_) => {
                if self
                    .dirs
                    .iter()
                    .any(|dir| lexical.starts_with(normalize(dir)))
                {
                    Ok(lexical)
                } else {
                    Err(self.outside(path.display().to_string()))
                }
            }
        }
    }

    /// Whether a manifest may read environment variable `var`.
    pub fn variable(&self, var: &str) -> Result<(), Refusal> {
        if PROXY_VARIABLES
            .iter()
            .any(|proxy| proxy.eq_ignore_ascii_case(var))
        {
            return Err(Refusal::ProxyVariable(var.to_owned()));
        }
        if self
            .env_prefixes
            .iter()
            .any(|prefix| var.starts_with(prefix.as_str()))
        {
            return Ok(());
        }
        Err(Refusal::VariableNotAllowed {
            var: var.to_owned(),
            prefixes: if self.env_prefixes.is_empty() {
                "none given".to_owned()
            } else {
                self.env_prefixes.join(", ")
            },
        })
    }

    /// The roots as they are on disk now (a root may itself be a link);
    /// those that do not exist hold nothing.
    fn canonical_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.dirs
            .iter()
            .filter_map(|dir| std::fs::canonicalize(dir).ok())
    }

    fn outside(&self, shown: String) -> Refusal {
        let dirs = if self.dirs.is_empty() {
            "none given".to_owned()
        } else {
            self.dirs
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Refusal::OutsideRoots { shown, dirs }
    }
}

/// `path` with `.` dropped and `..` taking away the component before it,
/// without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if out.file_name().is_some() {
                    out.pop();
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => out.push(component.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(OsStr::new("."));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(dir: &Path) -> CredentialRoots {
        CredentialRoots::new(vec![dir.to_owned()], vec!["POD_".to_owned()]).expect("valid")
    }

    #[test]
    fn files_under_a_root_are_read_and_others_refused() {
        let base = tempfile::tempdir().expect("temp dir");
        let secrets = base.path().join("secrets");
        std::fs::create_dir(&secrets).expect("mkdir");
        std::fs::write(secrets.join("token"), "t").expect("write");
        std::fs::write(base.path().join("other"), "o").expect("write");
        let roots = roots(&secrets);
        assert_eq!(
            roots.file(&secrets.join("token")),
            Ok(std::fs::canonicalize(secrets.join("token")).expect("exists"))
        );
        // Not there yet: judged by its path.
        assert!(roots.file(&secrets.join("later")).is_ok());
        for outside in [
            base.path().join("other"),
            secrets.join("../other"),
            secrets.join("../missing"),
            PathBuf::from("/etc/passwd"),
        ] {
            let refusal = roots.file(&outside).expect_err("outside");
            let text = refusal.to_string();
            assert!(
                text.contains(&outside.display().to_string()) && text.contains("--credentials-dir"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_secret_volumes_links_stay_inside_and_a_link_out_is_refused() {
        let base = tempfile::tempdir().expect("temp dir");
        let secrets = base.path().join("secrets");
        let data = secrets.join("..2026_12_07_10_00_00.123");
        std::fs::create_dir_all(&data).expect("mkdir");
        std::fs::write(data.join("token"), "t").expect("write");
        std::os::unix::fs::symlink("..2026_12_07_10_00_00.123", secrets.join("..data"))
            .expect("link");
        std::os::unix::fs::symlink("..data/token", secrets.join("token")).expect("link");
        std::fs::write(base.path().join("key"), "k").expect("write");
        std::os::unix::fs::symlink(base.path().join("key"), secrets.join("escape")).expect("link");
        let roots = roots(&secrets);
        assert!(roots.file(&secrets.join("token")).is_ok());
        let refusal = roots.file(&secrets.join("escape")).expect_err("a link out");
        assert!(refusal.to_string().contains("which leads to"), "{refusal}");
    }

    #[test]
    fn variables_need_a_prefix_and_proxies_never_pass() {
        let roots = roots(Path::new("/etc/secrets"));
        assert_eq!(roots.variable("POD_TOKEN"), Ok(()));
        assert!(matches!(
            roots.variable("HOME"),
            Err(Refusal::VariableNotAllowed { .. })
        ));
        let all = CredentialRoots::new(vec![], vec!["H".to_owned()]).expect("valid");
        for proxy in ["HTTPS_PROXY", "http_proxy", "All_Proxy", "NO_PROXY"] {
            assert_eq!(
                all.variable(proxy),
                Err(Refusal::ProxyVariable(proxy.to_owned()))
            );
        }
        assert!(CredentialRoots::new(vec![], vec![" ".to_owned()]).is_err());
        let none = CredentialRoots::default()
            .variable("PATH")
            .expect_err("none");
        assert!(none.to_string().contains("none given"), "{none}");
    }
}
