//! The seam every capability a manifest may grant goes through, as a Spin
//! factor is: a capability owns some manifest keys, parses them once at
//! load into a typed grant (reading the files they name through
//! [`LoadScope`], so a change to those files reloads the plugin), adds its
//! imports to the linker, and prepares the state each instance's store
//! holds. That state lasts as long as the instance, which may serve several
//! calls of one tenant (see `warm`): what belongs to one call (its log, its
//! deadline) is installed by the call itself (see `instance`), never here.
//!
//! [`Capabilities`] is the set the runtime grants from: outbound HTTP
//! (client, trust, proxy) and credentials from the pod.

use std::path::Path;

use serde::de::DeserializeOwned;
use wasmtime::component::Linker;

use super::{
    credential_roots::CredentialRoots,
    instance::InstanceState,
    outbound_http::{HttpGrant, InstanceHttp, OutboundHttp},
    pod_credentials::{PodCredentials, PodCredentialsGrant},
};
use crate::{file_stamp::FileRead, manifest::Manifest};

/// A capability the host may grant a plugin through its manifest.
pub(super) trait Capability {
    /// The top-level manifest keys (values or tables) it owns.
    const MANIFEST_KEYS: &'static [&'static str];
    /// What one plugin is granted, built once at load and shared by its calls.
    type Grant: Send + Sync + 'static;
    /// What one instance's store holds for it.
    type State: Send + 'static;

    /// Parses the plugin's sections into its grant; the error names the key
    /// and what is wrong with it.
    fn grant(&self, load: &mut LoadScope<'_>) -> Result<Self::Grant, String>;

    /// Adds the imports it provides (none, for a capability that only shapes
    /// a call's arguments).
    fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()>;

    /// The state an instance's store starts with.
    fn instance_state(grant: &Self::Grant, instance: &InstanceScope) -> Self::State;
}

/// What an instance is, as capabilities see it.
#[derive(Debug, Clone)]
pub(super) struct InstanceScope {
    /// The connector's name (its file name until its metadata is known),
    /// for logs and metric labels.
    pub(super) connector: std::sync::Arc<str>,
}

/// One plugin's load, as a capability parsing its sections sees it: the
/// manifest, and what of the pod it may read ([`CredentialRoots`]).
pub(super) struct LoadScope<'a> {
    manifest: &'a Manifest,
    roots: &'a CredentialRoots,
    files_read: Vec<FileRead>,
}

impl<'a> LoadScope<'a> {
    pub(super) fn new(manifest: &'a Manifest, roots: &'a CredentialRoots) -> Self {
        Self {
            manifest,
            roots,
            files_read: Vec::new(),
        }
    }

    /// The value of top-level key `key` read as `T`; `None` when absent.
    pub(super) fn section<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        self.manifest
            .sections
            .get(key)
            .cloned()
            .map(|value| value.try_into().map_err(|err| format!("{key}: {err}")))
            .transpose()
    }

    /// Reads the file at `path` (relative to the manifest's folder), named by
    /// manifest key `key`, if the credential roots allow it; a later change
    /// to it reloads the plugin.
    pub(super) fn read_file(&mut self, key: &str, path: &Path) -> Result<Vec<u8>, String> {
        let named = self.manifest.resolve(path);
        let allowed = self
            .roots
            .file(&named)
            .map_err(|refusal| format!("{key}: {refusal}"))?;
        self.read(key, &named, &allowed)
    }

    /// Like [`Self::read_file`], but a missing file is `None`, not an error.
    pub(super) fn read_file_if_present(
        &mut self,
        key: &str,
        path: &Path,
    ) -> Result<Option<Vec<u8>>, String> {
        let named = self.manifest.resolve(path);
        let allowed = self
            .roots
            .file(&named)
            .map_err(|refusal| format!("{key}: {refusal}"))?;
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
    pub(super) fn read_operator_file(
        &mut self,
        flag: &str,
        path: &Path,
    ) -> Result<Vec<u8>, String> {
        self.read(flag, path, path)
    }

    /// The value of environment variable `var`, named by manifest key
    /// `key`, if the credential roots allow it; `None` when it is not set.
    pub(super) fn read_env(&self, key: &str, var: &str) -> Result<Option<String>, String> {
        self.roots
            .variable(var)
            .map_err(|refusal| format!("{key}: {refusal}"))?;
        match std::env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("{key}: environment variable {var} is not UTF-8"))
            }
        }
    }

    /// Reads `path` (links resolved: `allowed`), stamping it as `named` so
    /// a swap of a link it goes through is seen.
    fn read(&mut self, key: &str, named: &Path, allowed: &Path) -> Result<Vec<u8>, String> {
        self.files_read.push(FileRead::stamp(named));
        std::fs::read(allowed)
            .map_err(|err| format!("{key}: cannot read {}: {err}", named.display()))
    }

    /// The files read so far, with their stamps.
    pub(super) fn into_files_read(self) -> Vec<FileRead> {
        self.files_read
    }
}

/// What one plugin is granted, every capability's grant.
pub(super) struct Grants {
    pub(super) http: HttpGrant,
    pub(super) credentials: PodCredentialsGrant,
}

/// What one instance's store holds for the capabilities (those with state).
pub(super) struct CapabilityStates {
    pub(super) http: InstanceHttp,
}

/// The capabilities the runtime grants from, with their server-wide
/// settings.
pub(super) struct Capabilities {
    pub(super) http: OutboundHttp,
    pub(super) credentials: PodCredentials,
    /// What of the pod any manifest may read.
    pub(super) roots: CredentialRoots,
}

impl Capabilities {
    /// Every capability's grant for the plugin of `manifest`, with the files
    /// they read; a key no capability owns is an error.
    pub(super) fn grant(&self, manifest: &Manifest) -> Result<(Grants, Vec<FileRead>), String> {
        let owned = [OutboundHttp::MANIFEST_KEYS, PodCredentials::MANIFEST_KEYS];
        if let Some(unknown) = manifest
            .sections
            .keys()
            .find(|key| !owned.iter().any(|keys| keys.contains(&key.as_str())))
        {
            return Err(format!("unknown key `{unknown}`"));
        }
        let mut load = LoadScope::new(manifest, &self.roots);
        let grants = Grants {
            http: self.http.grant(&mut load)?,
            credentials: self.credentials.grant(&mut load)?,
        };
        Ok((grants, load.into_files_read()))
    }

    /// Every capability's part of a new instance's store state.
    pub(super) fn instance_states(grants: &Grants, instance: &InstanceScope) -> CapabilityStates {
        let () = PodCredentials::instance_state(&grants.credentials, instance);
        CapabilityStates {
            http: OutboundHttp::instance_state(&grants.http, instance),
        }
    }

    /// Adds every capability's imports.
    pub(super) fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
        OutboundHttp::add_to_linker(linker)?;
        PodCredentials::add_to_linker(linker)?;
        Ok(())
    }
}
