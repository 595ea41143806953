//! Finds connector components: every `*.wasm` in the plugin folders (which
//! stand in for Python entry points) and each `--modules` entry, and loads
//! them into a [`Registry`].

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{manifest::Manifest, metrics::Metrics, registry::Registry, runtime::Runtime};

/// Environment variable listing plugin folders, colon-separated.
pub const PLUGIN_PATH_ENV: &str = "FLYTE_CONNECTOR_PATH";

/// Why start-up cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A `--modules` entry names nothing that exists.
    #[error("module {name:?} not found: looked for {}", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    ModuleNotFound {
        /// The entry as given.
        name: String,
        /// The paths tried.
        tried: Vec<PathBuf>,
    },
    /// A `--modules` entry exists but cannot be loaded or registered.
    #[error("cannot load module {name:?}: {reason}")]
    ModuleFailed {
        /// The entry as given.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The plugin folders: `--plugin-dir` if given, else `FLYTE_CONNECTOR_PATH`,
/// else `./connectors` when it exists.
pub fn plugin_folders(cli_dirs: &[PathBuf], env_value: Option<&str>, cwd: &Path) -> Vec<PathBuf> {
    if !cli_dirs.is_empty() {
        return cli_dirs.to_vec();
    }
    if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
        return value
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    let default = cwd.join("connectors");
    if default.is_dir() {
        vec![default]
    } else {
        Vec::new()
    }
}

/// Resolves a `--modules` entry: an existing path as is, else `NAME.wasm` in
/// the working directory, then in each plugin folder.
pub fn resolve_module(
    name: &str,
    cwd: &Path,
    folders: &[PathBuf],
) -> Result<PathBuf, DiscoveryError> {
    let as_given = cwd.join(name);
    if as_given.is_file() {
        return Ok(as_given);
    }
    let file_name = if name.ends_with(".wasm") {
        name.to_owned()
    } else {
        format!("{name}.wasm")
    };
    let mut tried = vec![as_given];
    for dir in std::iter::once(cwd).chain(folders.iter().map(PathBuf::as_path)) {
        let candidate = dir.join(&file_name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        if !tried.contains(&candidate) {
            tried.push(candidate);
        }
    }
    Err(DiscoveryError::ModuleNotFound {
        name: name.to_owned(),
        tried,
    })
}

/// The `*.wasm` files of a folder, sorted by name. A missing or unreadable
/// folder is a warning and yields nothing.
pub fn folder_components(folder: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(err) => {
            tracing::warn!(folder = %folder.display(), "cannot read plugin folder: {err}");
            return Vec::new();
        }
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm") && path.is_file())
        .collect();
    found.sort();
    found
}

/// Loads one component with its manifest and registers it.
async fn load_into(runtime: &Runtime, registry: &mut Registry, path: &Path) -> Result<(), String> {
    let manifest = Manifest::for_component(path).map_err(|err| err.to_string())?;
    let connector = runtime
        .load(path, &manifest)
        .await
        .map_err(|err| err.to_string())?;
    registry.register(connector).map_err(|err| err.to_string())
}

/// Loads `--modules` (fatal on failure) and then the plugin folders
/// (a warning on failure). A file reached twice is loaded once.
pub async fn load_registry(
    runtime: &Runtime,
    metrics: &Metrics,
    modules: &[String],
    folders: &[PathBuf],
    cwd: &Path,
) -> Result<Arc<Registry>, DiscoveryError> {
    let mut registry = Registry::new();
    let mut seen = HashSet::new();
    let mut first_visit =
        |path: &Path| seen.insert(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()));

    for name in modules {
        let path = resolve_module(name, cwd, folders)?;
        if !first_visit(&path) {
            continue;
        }
        load_into(runtime, &mut registry, &path)
            .await
            .map_err(|reason| DiscoveryError::ModuleFailed {
                name: name.clone(),
                reason,
            })?;
        metrics.components_loaded.inc();
    }
    for folder in folders {
        for path in folder_components(folder) {
            if !first_visit(&path) {
                continue;
            }
            match load_into(runtime, &mut registry, &path).await {
                Ok(()) => metrics.components_loaded.inc(),
                Err(reason) => tracing::warn!("skipping plugin {}: {reason}", path.display()),
            }
        }
    }
    Ok(Arc::new(registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_folders_win_over_the_environment() {
        let cwd = Path::new("/nonexistent");
        assert_eq!(
            plugin_folders(&[PathBuf::from("/a")], Some("/b:/c"), cwd),
            [PathBuf::from("/a")]
        );
        assert_eq!(
            plugin_folders(&[], Some("/b::/c"), cwd),
            [PathBuf::from("/b"), PathBuf::from("/c")]
        );
        assert!(plugin_folders(&[], None, cwd).is_empty());
    }
}
