//! Loading connectors, as a pipeline of small steps that publishes registry
//! snapshots:
//!
//! 1. [`scan`]: plugin folders and `--modules` become [`scan::Source`]s, each a
//!    component file with its manifest and a fingerprint of both.
//! 2. [`Loader`]: a source becomes a connector — compiled by the wasm
//!    runtime, or, for tests and benchmarks, anything implementing
//!    [`crate::connector::Connector`] registered in process.
//! 3. [`reload`]: the sources of a scan are diffed against what is served by
//!    path and fingerprint; unchanged connectors are reused, the rest loaded,
//!    and a new [`crate::registry::Registry`] is published to the services.
//! 4. [`watch`]: runs reloads on file events, on a timer and on SIGHUP.

pub mod reload;
pub mod scan;
pub mod watch;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;

pub use self::scan::ModuleError;
use crate::{connector::SharedConnector, manifest::Manifest, registry::Registry, runtime::Runtime};

/// Turns a component file into a connector.
#[async_trait]
pub trait Loader: Send + Sync {
    /// Loads the component at `path` (with its manifest beside it); the
    /// error says why it cannot be served.
    async fn load(&self, path: &Path) -> Result<SharedConnector, String>;
}

#[async_trait]
impl Loader for Runtime {
    async fn load(&self, path: &Path) -> Result<SharedConnector, String> {
        let manifest = Manifest::for_component(path).map_err(|err| err.to_string())?;
        let connector = Runtime::load(self, path, &manifest)
            .await
            .map_err(|err| err.to_string())?;
        Ok(connector as SharedConnector)
    }
}

/// A loader shared by the reload task and start-up.
pub type SharedLoader = Arc<dyn Loader>;

/// The connectors served before the plugin folders' and never reloaded:
/// those registered in process, then each `--modules` entry. A module that
/// cannot be found, loaded or registered stops start-up. Also returns the
/// modules' canonical paths, which folder scans leave out.
pub async fn fixed_connectors(
    loader: &dyn Loader,
    in_process: Vec<SharedConnector>,
    modules: &[String],
    folders: &[PathBuf],
    cwd: &Path,
) -> Result<(Vec<SharedConnector>, HashSet<PathBuf>), ModuleError> {
    let mut registry = Registry::new();
    let mut fixed = Vec::new();
    for connector in in_process {
        registry
            .register(SharedConnector::clone(&connector))
            .map_err(|err| ModuleError::Failed {
                name: connector.source().to_owned(),
                reason: err.to_string(),
            })?;
        fixed.push(connector);
    }
    let mut paths = HashSet::new();
    for name in modules {
        let path = scan::resolve_module(name, cwd, folders)?;
        if !paths.insert(scan::canonical(&path)) {
            continue;
        }
        let failed = |reason: String| ModuleError::Failed {
            name: name.clone(),
            reason,
        };
        let connector = loader.load(&path).await.map_err(failed)?;
        registry
            .register(SharedConnector::clone(&connector))
            .map_err(|err| failed(err.to_string()))?;
        fixed.push(connector);
    }
    Ok((fixed, paths))
}
