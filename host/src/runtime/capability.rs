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

/// One plugin's load, as a capability parsing its sections sees it.
pub(super) struct LoadScope<'a> {
    manifest: &'a Manifest,
    files_read: Vec<FileRead>,
}

impl<'a> LoadScope<'a> {
    pub(super) fn new(manifest: &'a Manifest) -> Self {
        Self {
            manifest,
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
    /// manifest key `key`; a later change to it reloads the plugin.
    pub(super) fn read_file(&mut self, key: &str, path: &Path) -> Result<Vec<u8>, String> {
        let path = self.manifest.resolve(path);
        self.files_read.push(FileRead::stamp(&path));
        std::fs::read(&path).map_err(|err| format!("{key}: cannot read {}: {err}", path.display()))
    }

    /// Like [`Self::read_file`], but a missing file is `None`, not an error.
    pub(super) fn read_file_if_present(
        &mut self,
        key: &str,
        path: &Path,
    ) -> Result<Option<Vec<u8>>, String> {
        let resolved = self.manifest.resolve(path);
        match std::fs::metadata(&resolved) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.files_read.push(FileRead::stamp(&resolved));
                Ok(None)
            }
            _ => self.read_file(key, path).map(Some),
        }
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
        let mut load = LoadScope::new(manifest);
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
