//! The seam every capability a manifest may grant goes through, as a Spin
//! factor is. A capability:
//!
//! - has server-wide settings ([`Capability::Config`], their defaults in its
//!   `Default`) that come from command-line flags of its own
//!   ([`Capability::Args`], flattened into the server's command line);
//! - owns some manifest keys, which it parses once at load into a typed
//!   grant, reading the files and variables they name through [`LoadScope`]
//!   (so that what the operator confined stays confined, and a change to a
//!   file reloads the plugin);
//! - adds its imports to the linker, reaching its state in the store
//!   through [`HasState`], whatever the store's type;
//! - prepares the state each instance's store holds for it, which lasts as
//!   long as the instance: an instance may serve several calls of one tenant
//!   (see `call::warm`), and what belongs to one call (its log, its deadline)
//!   is installed by the call itself, never here;
//! - may shape each call's arguments before the call ([`Capability::shape_call`]),
//!   and keep the call's deadline as it begins ([`Capability::begin_call`]).

use std::{fmt::Debug, path::Path, sync::Arc};

use serde::de::DeserializeOwned;
use wasmtime::component::{Linker, ResourceTable};

use super::concurrent_calls::ConcurrentCalls;
use super::config_error::ConfigError;
use super::credential_roots::{CredentialRoots, Refusal};
use crate::{connector::ConnectionMap, file_stamp::FileRead, manifest::Manifest};

/// A capability the host may grant a plugin through its manifest.
pub trait Capability: Sized + Send + Sync + 'static {
    /// The top-level manifest keys (values or tables) it owns.
    const MANIFEST_KEYS: &'static [&'static str];
    /// Its command-line flags.
    type Args: clap::Args + Clone + Debug + Send + Sync;
    /// Its server-wide settings; `Default` states the defaults.
    type Config: Default + Clone + Debug + Send + Sync;
    /// What one plugin is granted, built once at load and shared by its calls.
    type Grant: Send + Sync + 'static;
    /// What one instance's store holds for it.
    type State: Send + 'static;

    /// The settings its flags ask for.
    fn configure(args: Self::Args) -> Result<Self::Config, ConfigError>;

    /// The capability with its settings, its metrics registered in `metrics`.
    fn new(config: &Self::Config, metrics: &crate::metrics::MetricRegistry)
    -> anyhow::Result<Self>;

    /// Parses the plugin's sections into its grant.
    fn grant(&self, load: &mut LoadScope<'_>) -> Result<Self::Grant, GrantError>;

    /// Adds the imports it provides (none, for a capability that only
    /// shapes a call's arguments).
    fn add_to_linker<T: HasState<Self>>(_linker: &mut Linker<T>) -> anyhow::Result<()> {
        Ok(())
    }

    /// The state an instance's store starts with.
    fn instance_state(grant: &Self::Grant, instance: &InstanceScope) -> Self::State;

    /// Shapes a call's arguments before the guest is called.
    fn shape_call(_grant: &Self::Grant, _call: &mut CallArgs<'_>) {}

    /// Keeps what it needs of a call (its deadline, its output prefix) in the instance's
    /// state as the call begins; each call of an instance replaces the last.
    fn begin_call(_state: &mut Self::State, _call: &CallScope) {}

    /// Whether its grant shapes every call's connection from the pod (which
    /// makes calls without a connection of their own one tenant).
    fn fills_connection(_grant: &Self::Grant) -> bool {
        false
    }
}

/// A store's data that holds capability `C`'s state: how `C`'s imports
/// reach it, beside the resource table all imports share.
pub trait HasState<C: Capability>: Send + 'static {
    /// `C`'s state and the resource table.
    fn view(&mut self) -> CapabilityView<'_, C::State>;
}

/// A capability's state in a store, with the store's resource table.
pub struct CapabilityView<'a, S> {
    /// The capability's state.
    pub state: &'a mut S,
    /// The resource table all imports share.
    pub table: &'a mut ResourceTable,
    /// The calls the instance serves at once (async world only; see
    /// [`super::concurrent_calls::call_of`]).
    pub calls: &'a ConcurrentCalls,
}

/// The `HasData` of a capability whose host functions work on its
/// [`CapabilityView`] (add them with [`view_of`] as the getter).
pub struct ViewOf<C>(std::marker::PhantomData<C>);

impl<C: Capability> wasmtime::component::HasData for ViewOf<C> {
    type Data<'a> = CapabilityView<'a, C::State>;
}

/// `C`'s view of a store's data: the getter bindings' `add_to_linker` takes.
pub fn view_of<C: Capability, T: HasState<C>>(host: &mut T) -> CapabilityView<'_, C::State> {
    host.view()
}

/// What an instance is, as capabilities see it.
#[derive(Debug, Clone)]
pub struct InstanceScope {
    /// The connector's name (its file name until its metadata is known),
    /// for logs and metric labels.
    pub connector: Arc<str>,
}

/// What capabilities may know of a call as it begins.
#[derive(Debug, Clone)]
pub struct CallScope {
    /// When the call's time is up, if it has a limit.
    pub deadline: Option<std::time::Instant>,
    /// Where the task's outputs go (`s3://bucket/run/a0`), when the
    /// request names it (create and get); what the call may write to.
    pub output_prefix: Option<Arc<str>>,
}

/// Nanoseconds left before `deadline` (`call.time-left`): all there is
/// without one, 0 once it has passed.
pub(in crate::runtime) fn nanos_left(deadline: Option<std::time::Instant>) -> u64 {
    match deadline {
        None => u64::MAX,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)
        }
    }
}

/// A call's arguments as capabilities may shape them.
pub struct CallArgs<'a> {
    /// The merged connection map (secrets and configs).
    pub connection: &'a mut ConnectionMap,
}

/// Why a manifest's section cannot be granted.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// A top-level key no capability owns.
    #[error("unknown key `{0}`")]
    UnknownKey(String),
    /// A value that is not what its key takes (a type, a unit, a range).
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, dotted (`http.tls[0].ca_file`).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A file or variable the operator does not let manifests read.
    #[error("{key}: {refusal}")]
    NotAllowed {
        /// The key that names it.
        key: String,
        /// The rule it breaks.
        refusal: Refusal,
    },
    /// A file that cannot be read.
    #[error("{key}: cannot read {path}: {source}")]
    Unreadable {
        /// The key that names it.
        key: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl GrantError {
    /// An invalid value of `key`.
    pub(in crate::runtime) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// One plugin's load, as a capability parsing its sections sees it: the
/// manifest, and what of the pod it may read ([`CredentialRoots`]).
pub struct LoadScope<'a> {
    manifest: &'a Manifest,
    roots: &'a CredentialRoots,
    files_read: Vec<FileRead>,
}

impl<'a> LoadScope<'a> {
    pub(in crate::runtime) fn new(manifest: &'a Manifest, roots: &'a CredentialRoots) -> Self {
        Self {
            manifest,
            roots,
            files_read: Vec::new(),
        }
    }

    /// The value of top-level key `key` read as `T`; `None` when absent.
    pub(in crate::runtime) fn section<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, GrantError> {
        self.manifest
            .sections
            .get(key)
            .cloned()
            .map(|value| {
                value
                    .try_into()
                    .map_err(|err: toml::de::Error| GrantError::invalid(key, err.to_string()))
            })
            .transpose()
    }

    /// Reads the file at `path` (relative to the manifest's folder), named by
    /// manifest key `key`, if the credential roots allow it; a later change
    /// to it reloads the plugin.
    pub(in crate::runtime) fn read_file(
        &mut self,
        key: &str,
        path: &Path,
    ) -> Result<Vec<u8>, GrantError> {
        let (named, allowed) = self.allowed(key, path)?;
        self.read(key, &named, &allowed)
    }

    /// Like [`Self::read_file`], but a missing file is `None`, not an error.
    pub(in crate::runtime) fn read_file_if_present(
        &mut self,
        key: &str,
        path: &Path,
    ) -> Result<Option<Vec<u8>>, GrantError> {
        let (named, allowed) = self.allowed(key, path)?;
        match std::fs::metadata(&allowed) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.files_read.push(FileRead::stamp(&named));
                Ok(None)
            }
            _ => self.read(key, &named, &allowed).map(Some),
        }
    }

    /// Reads a file the operator named on the command line (`flag`), where
    /// the credential roots do not apply; a change to it reloads the plugin.
    pub(in crate::runtime) fn read_operator_file(
        &mut self,
        flag: &str,
        path: &Path,
    ) -> Result<Vec<u8>, GrantError> {
        self.read(flag, path, path)
    }

    /// The value of environment variable `var`, named by manifest key
    /// `key`, if the credential roots allow it; `None` when it is not set.
    pub(in crate::runtime) fn read_env(
        &self,
        key: &str,
        var: &str,
    ) -> Result<Option<String>, GrantError> {
        self.roots
            .variable(var)
            .map_err(|refusal| GrantError::NotAllowed {
                key: key.to_owned(),
                refusal,
            })?;
        match std::env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(GrantError::invalid(
                key,
                format!("environment variable {var} is not UTF-8"),
            )),
        }
    }

    /// The files read so far, with their stamps.
    pub(in crate::runtime) fn into_files_read(self) -> Vec<FileRead> {
        self.files_read
    }

    /// `path` as the manifest names it (resolved against its folder), and
    /// the path to read, its links resolved, if the roots allow it.
    fn allowed(
        &self,
        key: &str,
        path: &Path,
    ) -> Result<(std::path::PathBuf, std::path::PathBuf), GrantError> {
        let named = self.manifest.resolve(path);
        let allowed = self
            .roots
            .file(&named)
            .map_err(|refusal| GrantError::NotAllowed {
                key: key.to_owned(),
                refusal,
            })?;
        Ok((named, allowed))
    }

    /// Reads `allowed`, stamping it as `named` so a swap of a link it goes
    /// through is seen.
    fn read(&mut self, key: &str, named: &Path, allowed: &Path) -> Result<Vec<u8>, GrantError> {
        self.files_read.push(FileRead::stamp(named));
        std::fs::read(allowed).map_err(|source| GrantError::Unreadable {
            key: key.to_owned(),
            path: named.display().to_string(),
            source,
        })
    }
}
