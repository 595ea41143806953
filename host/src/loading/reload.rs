//! Reload by diff: the sources of a scan are compared with what is served,
//! by path and fingerprint. Unchanged connectors are reused, new and changed
//! files are loaded, vanished ones dropped, and a new registry is published
//! when anything changed. Calls in flight keep the connector they started
//! with: the registry holds shared handles, and a replaced connector lives
//! until its last call ends.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{
    SharedLoader,
    scan::{self, Fingerprint, Source},
};
use crate::{
    connector::SharedConnector,
    file_stamp::FileRead,
    metrics::{Metrics, ReloadOutcome},
    registry::Registry,
};

/// How long a changed file must stay unchanged before it is loaded, so a
/// file still being copied is not loaded half-written.
pub const SETTLE_TIME: Duration = Duration::from_millis(300);

/// Why a reload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Start-up: load every file as it is.
    Startup,
    /// A file event or the periodic rescan: load changed files once they
    /// have settled.
    Watch,
    /// SIGHUP: the operator says the files are complete; load them now.
    Forced,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// A new registry was published.
    pub published: bool,
    /// Some changed files are still settling: scan again after
    /// [`SETTLE_TIME`].
    pub unsettled: bool,
}

struct Loaded {
    fingerprint: Fingerprint,
    connector: SharedConnector,
    /// The files its load read, as they were then.
    files: Vec<FileRead>,
}

/// Keeps the plugin folders' connectors in step with the files.
pub struct Reloader {
    loader: SharedLoader,
    folders: Vec<PathBuf>,
    /// `--modules` and in-process connectors: served first, never reloaded.
    fixed: Vec<SharedConnector>,
    /// Canonical paths of `--modules`, left out of folder scans.
    fixed_paths: HashSet<PathBuf>,
    /// Folder components being served, by path.
    loaded: BTreeMap<PathBuf, Loaded>,
    /// Versions that failed to load, not tried again until they change.
    failed: HashMap<PathBuf, Fingerprint>,
    /// Changed files waiting to settle, with when they were first seen so.
    settling: HashMap<PathBuf, (Fingerprint, Instant)>,
    metrics: Metrics,
    publisher: watch::Sender<Arc<Registry>>,
}

impl Reloader {
    /// A reloader for `folders`, serving `fixed` connectors before them.
    /// It publishes through `publisher`.
    pub fn new(
        loader: SharedLoader,
        folders: Vec<PathBuf>,
        fixed: Vec<SharedConnector>,
        fixed_paths: HashSet<PathBuf>,
        metrics: Metrics,
        publisher: watch::Sender<Arc<Registry>>,
    ) -> Self {
        Self {
            loader,
            folders,
            fixed,
            fixed_paths,
            loaded: BTreeMap::new(),
            failed: HashMap::new(),
            settling: HashMap::new(),
            metrics,
            publisher,
        }
    }

    /// The plugin folders watched.
    pub fn folders(&self) -> &[PathBuf] {
        &self.folders
    }

    /// Scans the folders and brings the served connectors in line with them.
    pub async fn reload(&mut self, trigger: Trigger) -> ReloadReport {
        let sources = scan::scan_folders(
            &self.folders,
            &self.fixed_paths,
            trigger == Trigger::Startup,
        );
        let mut report = ReloadReport::default();
        let mut changed = trigger == Trigger::Startup;
        let present: HashSet<&PathBuf> = sources.iter().map(|s| &s.path).collect();
        let gone: Vec<PathBuf> = self
            .loaded
            .keys()
            .filter(|path| !present.contains(path))
            .cloned()
            .collect();
        for path in gone {
            if let Some(old) = self.loaded.remove(&path) {
                tracing::info!(
                    "plugin {} removed: no longer serving {}",
                    path.display(),
                    old.connector.info().name
                );
                self.metrics.record_reload(ReloadOutcome::Removed);
                changed = true;
            }
        }
        self.failed.retain(|path, _| present.contains(path));
        self.settling.retain(|path, _| present.contains(path));

        for source in sources {
            let loaded = self.loaded.get(&source.path);
            if let Some(file) = loaded.and_then(|old| old.files.iter().find(|f| f.changed())) {
                // A rotated certificate or Secret is complete when it shows
                // (a Secret volume swaps a link): loaded at once.
                tracing::info!(
                    "plugin {}: {} changed, reloading it",
                    source.path.display(),
                    file.path.display()
                );
                let path = source.path.clone();
                if self.load(source, trigger).await {
                    changed = true;
                } else if let Some(old) = self.loaded.get_mut(&path) {
                    // The version before keeps serving; try again when
                    // the files change once more.
                    old.files = old.files.iter().map(|f| FileRead::stamp(&f.path)).collect();
                }
                continue;
            }
            if loaded.is_some_and(|old| old.fingerprint == source.fingerprint)
                || self.failed.get(&source.path) == Some(&source.fingerprint)
            {
                self.settling.remove(&source.path);
                continue;
            }
            if trigger == Trigger::Watch && !self.settled(&source) {
                report.unsettled = true;
                continue;
            }
            self.settling.remove(&source.path);
            changed |= self.load(source, trigger).await;
        }

        if changed {
            self.publish(trigger);
            report.published = true;
        }
        report
    }

    /// Whether `source` has kept its fingerprint for [`SETTLE_TIME`].
    fn settled(&mut self, source: &Source) -> bool {
        let now = Instant::now();
        match self.settling.get(&source.path) {
            Some((fingerprint, since)) if *fingerprint == source.fingerprint => {
                now.duration_since(*since) >= SETTLE_TIME
            }
            _ => {
                self.settling
                    .insert(source.path.clone(), (source.fingerprint, now));
                false
            }
        }
    }

    /// Loads a new or changed file; whether what is served changed.
    async fn load(&mut self, source: Source, trigger: Trigger) -> bool {
        let replacing = self.loaded.contains_key(&source.path);
        match self.loader.load(&source.path).await {
            Ok(connector) => {
                self.metrics.components_loaded.inc();
                self.failed.remove(&source.path);
                if trigger != Trigger::Startup {
                    let info = connector.info();
                    tracing::info!(
                        "plugin {} {}: serving {} ({})",
                        source.path.display(),
                        if replacing { "replaced" } else { "added" },
                        info.name,
                        info.task_categories
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.metrics.record_reload(if replacing {
                        ReloadOutcome::Replaced
                    } else {
                        ReloadOutcome::Added
                    });
                }
                let files = connector.files_read().to_vec();
                self.loaded.insert(
                    source.path,
                    Loaded {
                        fingerprint: source.fingerprint,
                        connector,
                        files,
                    },
                );
                true
            }
            Err(reason) => {
                if replacing {
                    tracing::warn!(
                        "cannot reload plugin {}: {reason}; the version loaded before keeps serving",
                        source.path.display()
                    );
                } else {
                    tracing::warn!("skipping plugin {}: {reason}", source.path.display());
                }
                if trigger != Trigger::Startup {
                    self.metrics.record_reload(ReloadOutcome::Failed);
                }
                self.failed.insert(source.path, source.fingerprint);
                false
            }
        }
    }

    /// Builds the registry from the fixed connectors and the folders' (in
    /// scan order) and publishes it. A task type served twice keeps the
    /// first connector and warns about the second.
    fn publish(&self, trigger: Trigger) {
        let mut registry = Registry::new();
        for connector in &self.fixed {
            if let Err(err) = registry.register(SharedConnector::clone(connector)) {
                tracing::warn!("{err}");
            }
        }
        for (path, loaded) in &self.loaded {
            if let Err(err) = registry.register(SharedConnector::clone(&loaded.connector)) {
                tracing::warn!("skipping plugin {}: {err}", path.display());
            }
        }
        if trigger != Trigger::Startup {
            tracing::info!(
                "now serving {} connectors: {}",
                registry.connectors().len(),
                registry
                    .connectors()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.publisher.send_replace(Arc::new(registry));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use async_trait::async_trait;

    use super::*;
    use crate::{
        connector::{
            Connector, ConnectorError, ConnectorInfo, CreateRequest, Deadline, DeleteRequest,
            GetRequest, LogsPage, LogsRequest, MetricResult, MetricsRequest, Resource,
            TaskCategory,
        },
        loading::Loader,
    };

    /// A connector named after its file's contents: `NAME TASK_TYPE`.
    struct Named {
        info: ConnectorInfo,
    }

    #[async_trait]
    impl Connector for Named {
        fn info(&self) -> &ConnectorInfo {
            &self.info
        }
        fn source(&self) -> &str {
            "test"
        }
        async fn create(&self, _: CreateRequest, _: Deadline) -> Result<Vec<u8>, ConnectorError> {
            Err(ConnectorError::NotImplemented)
        }
        async fn get(&self, _: GetRequest, _: Deadline) -> Result<Resource, ConnectorError> {
            Err(ConnectorError::NotImplemented)
        }
        async fn delete(&self, _: DeleteRequest, _: Deadline) -> Result<(), ConnectorError> {
            Err(ConnectorError::NotImplemented)
        }
        async fn get_metrics(
            &self,
            _: MetricsRequest,
            _: Deadline,
        ) -> Result<Vec<MetricResult>, ConnectorError> {
            Err(ConnectorError::NotImplemented)
        }
        async fn get_logs(&self, _: LogsRequest, _: Deadline) -> Result<LogsPage, ConnectorError> {
            Err(ConnectorError::NotImplemented)
        }
    }

    /// Reads `NAME TASK_TYPE` from the file; anything else fails to load.
    struct TextLoader;

    #[async_trait]
    impl Loader for TextLoader {
        async fn load(&self, path: &Path) -> Result<SharedConnector, String> {
            let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            let (name, task_type) = text.split_once(' ').ok_or("not a test component")?;
            Ok(Arc::new(Named {
                info: ConnectorInfo {
                    name: name.to_owned(),
                    task_categories: vec![TaskCategory {
                        name: task_type.trim().to_owned(),
                        version: 0,
                    }],
                },
            }))
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        reloader: Reloader,
        served: watch::Receiver<Arc<Registry>>,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let (publisher, served) = watch::channel(Arc::new(Registry::new()));
            let reloader = Reloader::new(
                Arc::new(TextLoader),
                vec![dir.path().to_owned()],
                Vec::new(),
                HashSet::new(),
                Metrics::new().expect("metrics"),
                publisher,
            );
            Self {
                dir,
                reloader,
                served,
            }
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join(name), text).expect("write");
        }

        fn names(&self) -> Vec<String> {
            self.served.borrow().connectors().into_keys().collect()
        }

        /// Reloads until nothing is settling, as the watcher does.
        async fn settle(&mut self) -> ReloadReport {
            let mut report = self.reloader.reload(Trigger::Watch).await;
            while report.unsettled {
                tokio::time::sleep(SETTLE_TIME).await;
                let next = self.reloader.reload(Trigger::Watch).await;
                report = ReloadReport {
                    published: report.published || next.published,
                    unsettled: next.unsettled,
                };
            }
            report
        }
    }

    #[tokio::test]
    async fn files_are_added_replaced_and_removed() {
        let mut fx = Fixture::new();
        fx.write("a.wasm", "Alpha a");
        fx.reloader.reload(Trigger::Startup).await;
        assert_eq!(fx.names(), ["Alpha"]);

        fx.write("b.wasm", "Beta b");
        let first = fx.reloader.reload(Trigger::Watch).await;
        assert!(
            first.unsettled && !first.published,
            "a new file settles first"
        );
        assert!(fx.settle().await.published);
        assert_eq!(fx.names(), ["Alpha", "Beta"]);

        fx.write("a.wasm", "Gamma a");
        fx.settle().await;
        assert_eq!(fx.names(), ["Beta", "Gamma"]);

        std::fs::remove_file(fx.dir.path().join("b.wasm")).expect("remove");
        assert!(fx.reloader.reload(Trigger::Watch).await.published);
        assert_eq!(fx.names(), ["Gamma"]);

        let unchanged = fx.reloader.reload(Trigger::Watch).await;
        assert_eq!(unchanged, ReloadReport::default());
    }

    #[tokio::test]
    async fn a_broken_replacement_leaves_the_old_version_serving() {
        let mut fx = Fixture::new();
        fx.write("a.wasm", "Alpha a");
        fx.reloader.reload(Trigger::Startup).await;
        fx.write("a.wasm", "garbage");
        let report = fx.settle().await;
        assert!(!report.published);
        assert_eq!(fx.names(), ["Alpha"]);
        let text = fx.reloader.metrics.render();
        assert!(
            text.contains(r#"flyte_connector_reloads_total{outcome="failed"} 1"#),
            "{text}"
        );
        // The same broken file is not tried again on every scan.
        fx.reloader.reload(Trigger::Watch).await;
        let text = fx.reloader.metrics.render();
        assert!(
            text.contains(r#"flyte_connector_reloads_total{outcome="failed"} 1"#),
            "{text}"
        );
        fx.write("a.wasm", "Alpha2 a");
        fx.settle().await;
        assert_eq!(fx.names(), ["Alpha2"]);
    }

    #[tokio::test]
    async fn sighup_loads_without_waiting_and_duplicates_keep_the_first() {
        let mut fx = Fixture::new();
        fx.reloader.reload(Trigger::Startup).await;
        fx.write("a.wasm", "Alpha t");
        fx.write("b.wasm", "Beta t");
        assert!(fx.reloader.reload(Trigger::Forced).await.published);
        assert_eq!(fx.names(), ["Alpha"]);
        std::fs::remove_file(fx.dir.path().join("a.wasm")).expect("remove");
        fx.reloader.reload(Trigger::Watch).await;
        assert_eq!(
            fx.names(),
            ["Beta"],
            "the second takes over once the first is gone"
        );
    }
}
