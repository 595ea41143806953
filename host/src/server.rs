//! Assembles the service: loads the connectors, then serves the two
//! connector services, gRPC health and reflection on one port and the
//! Prometheus metrics on another, keeping the plugin folders loaded, until
//! a signal or `--timeout`.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::server::TcpIncoming;

use crate::{
    connector::{SharedConnector, TaskCategory},
    loading::{
        self,
        reload::{Reloader, Trigger},
        scan,
    },
    metrics::Metrics,
    proto::{
        self,
        connector::{
            async_connector_service_server::AsyncConnectorServiceServer,
            connector_metadata_service_server::ConnectorMetadataServiceServer,
        },
    },
    registry::Registry,
    runtime::{Runtime, RuntimeConfig},
    service::{AsyncConnector, ConnectorMetadata, RegistryView},
};

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: IpAddr,
    /// gRPC port (0 picks a free one).
    pub port: u16,
    /// Metrics port (0 picks a free one).
    pub prometheus_port: u16,
    /// Stop after this long.
    pub timeout: Option<Duration>,
    /// Threads of the async runtime [`ConnectorService::run_blocking`]
    /// builds; `None`: one per CPU core.
    pub worker_threads: Option<usize>,
    /// `--modules` entries.
    pub modules: Vec<String>,
    /// `--plugin-dir` folders; empty means `FLYTE_CONNECTOR_PATH` or `./connectors`.
    pub plugin_dirs: Vec<PathBuf>,
    /// How often the plugin folders are rescanned for changes (file events
    /// reload at once); `None`: only SIGHUP reloads them.
    pub reload_interval: Option<Duration>,
    /// Largest gRPC message received or sent.
    pub max_message_bytes: usize,
    /// Runtime sizing and limits.
    pub runtime: RuntimeConfig,
    /// Print the connector table on standard output at start-up, as the
    /// Python server does; when false (JSON logs, which a pipeline reads
    /// line by line) each connector is logged instead.
    pub connector_table: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 8000,
            prometheus_port: 9090,
            timeout: None,
            worker_threads: None,
            modules: Vec::new(),
            plugin_dirs: Vec::new(),
            reload_interval: Some(Duration::from_secs(1)),
            max_message_bytes: 4 << 20,
            runtime: RuntimeConfig::default(),
            connector_table: true,
        }
    }
}

/// The connector service: run it from async code with [`ConnectorService::run`],
/// or from sync code with [`ConnectorService::run_blocking`].
pub struct ConnectorService {
    config: ServerConfig,
    in_process: Vec<SharedConnector>,
}

impl ConnectorService {
    /// A service that will serve with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            in_process: Vec::new(),
        }
    }

    /// Also serves `connector`, implemented in process rather than as a
    /// component (benchmarks and tests use this for native connectors).
    /// It is served before the components and never reloaded.
    pub fn with_connector(mut self, connector: SharedConnector) -> Self {
        self.in_process.push(connector);
        self
    }

    /// Serves until SIGINT/SIGTERM or the configured timeout, then finishes
    /// the calls in flight and returns.
    pub async fn run(self) -> anyhow::Result<()> {
        let timeout = self.config.timeout;
        self.run_until(shutdown_signal(timeout)).await
    }

    /// Builds a Tokio runtime and runs [`ConnectorService::run`] on it.
    pub fn run_blocking(self) -> anyhow::Result<()> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(threads) = self.config.worker_threads {
            builder.worker_threads(threads.max(1));
        }
        builder
            .enable_all()
            .thread_name("flyte-connect")
            .build()
            .context("cannot start the async runtime")?
            .block_on(self.run())
    }

    /// Serves until `shutdown` completes, then finishes the calls in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let config = self.config;
        tracing::info!("starting the connector service");
        let metrics = Metrics::new().context("cannot create the metrics")?;
        let runtime = Runtime::new(config.runtime.clone(), metrics.clone())
            .context("cannot start the WebAssembly runtime")?;

        let (reloader, registry_view) =
            load_connectors(&config, self.in_process, &runtime, &metrics).await?;
        let registry = Arc::clone(&registry_view.borrow());
        if config.connector_table {
            println!("{}", connector_table(&registry));
        } else {
            for (name, categories) in registry.connectors() {
                tracing::info!(connector = %name, task_types = %task_type_list(&categories), "serving");
            }
        }
        if registry.is_empty() {
            tracing::warn!(
                "no connectors loaded: pass --modules or put components in a plugin folder"
            );
        }

        let (grpc_listener, metrics_listener) = listen(&config).await?;
        let (health, health_service) = tonic_health::server::health_reporter();
        set_serving(&health, true).await;
        let (reflection_v1, reflection_v1alpha) = reflection_services()?;

        let (stop_tx, stop_rx) = watch::channel(false);
        if config.reload_interval.is_none() {
            tracing::info!("automatic reload is off: plugin folders reload on SIGHUP only");
        }
        tokio::spawn(loading::watch::run(
            reloader,
            config.reload_interval,
            stop_rx.clone(),
        ));
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing calls in flight");
            set_serving(&health, false).await;
            let _ = stop_tx.send(true);
        });

        let grpc = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                AsyncConnectorServiceServer::new(AsyncConnector::new(
                    registry_view.clone(),
                    metrics.clone(),
                    config.max_message_bytes,
                ))
                .max_decoding_message_size(config.max_message_bytes)
                .max_encoding_message_size(config.max_message_bytes),
            )
            .add_service(ConnectorMetadataServiceServer::new(ConnectorMetadata::new(
                registry_view,
            )))
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY a small response can wait ~40 ms for a delayed ACK.
                TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            );
        let metrics_http =
            serve_metrics(metrics_listener, metrics, runtime.clone(), stopped(stop_rx));

        let (grpc_result, metrics_result) = tokio::join!(grpc, metrics_http);
        grpc_result.context("gRPC server failed")?;
        metrics_result.context("metrics server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The gRPC and the metrics listeners, as `config` places them; their
/// addresses are logged (the tests read them there).
async fn listen(config: &ServerConfig) -> anyhow::Result<(TcpListener, TcpListener)> {
    let grpc = TcpListener::bind(SocketAddr::new(config.host, config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{} for gRPC", config.host, config.port))?;
    let metrics = TcpListener::bind(SocketAddr::new(config.host, config.prometheus_port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{} for metrics",
                config.host, config.prometheus_port
            )
        })?;
    tracing::info!("gRPC server listening on {}", grpc.local_addr()?);
    tracing::info!("metrics served on http://{}/metrics", metrics.local_addr()?);
    Ok((grpc, metrics))
}

/// Reports both services serving (or not) to gRPC health checks.
async fn set_serving(health: &tonic_health::server::HealthReporter, serving: bool) {
    if serving {
        health
            .set_serving::<AsyncConnectorServiceServer<AsyncConnector>>()
            .await;
        health
            .set_serving::<ConnectorMetadataServiceServer<ConnectorMetadata>>()
            .await;
    } else {
        health
            .set_not_serving::<AsyncConnectorServiceServer<AsyncConnector>>()
            .await;
        health
            .set_not_serving::<ConnectorMetadataServiceServer<ConnectorMetadata>>()
            .await;
    }
}

/// Loads what is served: connectors registered in process and `--modules`
/// (any failure stops start-up), then the plugin folders. Returns the
/// reloader that keeps the folders in step with the files, and the registry
/// view the services read.
async fn load_connectors(
    config: &ServerConfig,
    in_process: Vec<SharedConnector>,
    runtime: &Runtime,
    metrics: &Metrics,
) -> anyhow::Result<(Reloader, RegistryView)> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let env_path = std::env::var(scan::PLUGIN_PATH_ENV).ok();
    let folders = scan::plugin_folders(&config.plugin_dirs, env_path.as_deref(), &cwd);
    let (fixed, fixed_paths) =
        loading::fixed_connectors(runtime, in_process, &config.modules, &folders, &cwd).await?;
    metrics.components_loaded.inc_by(fixed_paths.len() as u64);
    let (publisher, view) = watch::channel(Arc::new(Registry::new()));
    let mut reloader = Reloader::new(
        Arc::new(runtime.clone()),
        folders,
        fixed,
        fixed_paths,
        metrics.clone(),
        publisher,
    );
    reloader.reload(Trigger::Startup).await;
    Ok((reloader, view))
}

/// gRPC reflection, v1 and v1alpha, of the connector and health services.
fn reflection_services() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .context("cannot build the reflection service")?;
    let v1alpha = builder()
        .build_v1alpha()
        .context("cannot build the reflection service")?;
    Ok((v1, v1alpha))
}

/// Resolves once the stop flag is raised.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// SIGINT, SIGTERM, or the end of `timeout`.
async fn shutdown_signal(timeout: Option<Duration>) {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    let deadline = async {
        match timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
        () = deadline => tracing::info!("--timeout reached"),
    }
}

/// Serves `GET /metrics` in the Prometheus text format.
async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    runtime: Runtime,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            metrics.calls_in_flight.set(gauge(runtime.calls_running()));
            metrics.calls_queued.set(gauge(runtime.calls_queued()));
            metrics.call_slots_in_use.set(gauge(runtime.slots_in_use()));
            metrics.idle_instances.set(gauge(runtime.idle_instances()));
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A connector's task types as the start-up table shows them:
/// `name (version)`, space-separated.
fn task_type_list(categories: &[TaskCategory]) -> String {
    categories
        .iter()
        .map(|c| format!("{} ({})", c.name, c.version))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The start-up table: each connector and the task types it serves.
fn connector_table(registry: &Registry) -> String {
    const TITLE: &str = "Connector Metadata";
    let rows: Vec<(String, String)> = registry
        .connectors()
        .into_iter()
        .map(|(name, categories)| (name, task_type_list(&categories)))
        .collect();
    let header = (
        "Connector Name".to_owned(),
        "Supported Task Types".to_owned(),
    );
    let width = |pick: fn(&(String, String)) -> &String| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|r| pick(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w1, w2) = (width(|r| &r.0), width(|r| &r.1));
    let line = |l: &str, m: &str, r: &str| {
        format!("{l}{}{m}{}{r}", "─".repeat(w1 + 2), "─".repeat(w2 + 2))
    };
    let row = |a: &str, b: &str| format!("│ {a:<w1$} │ {b:<w2$} │");
    let mut out = vec![
        format!("{TITLE:^total$}", total = w1 + w2 + 7),
        line("┌", "┬", "┐"),
        row(&header.0, &header.1),
        line("├", "┼", "┤"),
    ];
    out.extend(rows.iter().map(|(a, b)| row(a, b)));
    out.push(line("└", "┴", "┘"));
    out.join("\n")
}
