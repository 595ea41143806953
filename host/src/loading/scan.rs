//! Where components come from: every `*.wasm` in the plugin folders (which
//! stand in for Python entry points) and each `--modules` entry, each with
//! a fingerprint that tells when the file or its manifest changed.

use std::{
    collections::HashSet,
    fs::Metadata,
    path::{Path, PathBuf},
};

use crate::file_stamp::FileStamp;

/// Environment variable listing plugin folders, colon-separated.
pub const PLUGIN_PATH_ENV: &str = "FLYTE_CONNECTOR_PATH";

/// Why start-up cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// A `--modules` entry names nothing that exists.
    #[error("module {name:?} not found: looked for {}", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// The entry as given.
        name: String,
        /// The paths tried.
        tried: Vec<PathBuf>,
    },
    /// A `--modules` entry exists but cannot be loaded or registered.
    #[error("cannot load module {name:?}: {reason}")]
    Failed {
        /// The entry as given.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A component and its manifest as they are on disk now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    component: FileStamp,
    manifest: Option<FileStamp>,
}

impl Fingerprint {
    /// The fingerprint of the component at `path` and of `NAME.toml` beside
    /// it; `None` when the component is gone.
    pub fn read(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok().filter(Metadata::is_file)?;
        Some(Self {
            component: FileStamp::of(&metadata),
            manifest: FileStamp::read(&path.with_extension("toml")),
        })
    }
}

/// A component file found in a plugin folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// Its state when scanned.
    pub fingerprint: Fingerprint,
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
pub fn resolve_module(name: &str, cwd: &Path, folders: &[PathBuf]) -> Result<PathBuf, ModuleError> {
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
    Err(ModuleError::NotFound {
        name: name.to_owned(),
        tried,
    })
}

/// The path that identifies a file however it was reached.
pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// The `*.wasm` files of the folders, each once, in folder order and by name
/// within a folder, leaving out `skip` (canonical paths, e.g. `--modules`).
/// A folder that cannot be read yields nothing; `warn` says whether to log it.
pub fn scan_folders(folders: &[PathBuf], skip: &HashSet<PathBuf>, warn: bool) -> Vec<Source> {
    let mut seen = skip.clone();
    let mut sources = Vec::new();
    for folder in folders {
        let entries = match std::fs::read_dir(folder) {
            Ok(entries) => entries,
            Err(err) => {
                if warn {
                    tracing::warn!(folder = %folder.display(), "cannot read plugin folder: {err}");
                }
                continue;
            }
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
            .collect();
        found.sort();
        for path in found {
            let Some(fingerprint) = Fingerprint::read(&path) else {
                continue;
            };
            if seen.insert(canonical(&path)) {
                sources.push(Source { path, fingerprint });
            }
        }
    }
    sources
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

    #[test]
    fn a_scan_lists_components_once_and_sees_manifest_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = dir.path().join("a.wasm");
        std::fs::write(&a, b"a").expect("write");
        std::fs::write(dir.path().join("b.wasm"), b"b").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"x").expect("write");
        let folders = [dir.path().to_owned(), dir.path().to_owned()];
        let sources = scan_folders(&folders, &HashSet::from([canonical(&a)]), true);
        let names: Vec<_> = sources.iter().filter_map(|s| s.path.file_name()).collect();
        assert_eq!(names, ["b.wasm"]);

        let before = Fingerprint::read(&a);
        std::fs::write(dir.path().join("a.toml"), b"memory_mb = 1").expect("write");
        assert_ne!(before, Fingerprint::read(&a));
        assert_eq!(Fingerprint::read(&dir.path().join("gone.wasm")), None);
    }
}
