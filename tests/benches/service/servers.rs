//! The servers the benchmark compares, each in a process of its own so its
//! memory and start-up are its own:
//!
//! - (a) `flyte-connect` with `echo.wasm`;
//! - (b) the Python server `c0` from the `flyte` package with an equivalent
//!   Python echo connector (`benches/python/echo_connector.py`);
//! - (c) `flyte-connect`'s library serving echo compiled natively, in
//!   process: the design without WebAssembly;
//! - (d) a bare tonic server answering the same RPCs with no work: the
//!   transport's ceiling;
//! - for `egress`, `c0` again with Flyte's own Databricks connector
//!   ([`python_serving`]).
//!
//! (c) and (d) are this benchmark binary started again with `--serve`.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use flyte_connect::{
    ConnectorService, ServerConfig,
    proto::{
        connector::{
            self as pb, async_connector_service_server::AsyncConnectorService,
            async_connector_service_server::AsyncConnectorServiceServer,
        },
        core::task_execution::Phase,
    },
};
use flyte_connect_e2e::{Server, Workspace, native::NativeConnector, status_kib};
use tonic::{Request, Response, Status};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// How long a server may take to answer its first health check.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A running server under test.
pub struct Target {
    /// What it is, for the report.
    pub name: &'static str,
    /// The task type of its echo connector.
    pub task_type: &'static str,
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// From spawning the process to its first SERVING health check.
    pub ready_after: Duration,
    process: Process,
}

enum Process {
    Harness(Server),
    Child(Child),
}

impl Target {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Harness(server) => server.pid(),
            Process::Child(child) => child.id(),
        }
    }

    /// The process's peak resident set (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.pid(), "VmHWM")
    }

    /// Instances flyte-connect has started afresh for calls so far (its
    /// `flyte_connector_instances_total{start="fresh"}`, every connector);
    /// none for another server.
    pub fn fresh_instances(&self) -> Option<f64> {
        let Process::Harness(server) = &self.process else {
            return None;
        };
        let text = server.metrics_text();
        let fresh = text
            .lines()
            .filter(|line| {
                line.starts_with("flyte_connector_instances_total{")
                    && line.contains("start=\"fresh\"")
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        Some(fresh)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Process::Child(child) = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `addr` answers a health check with SERVING.
async fn wait_ready(
    addr: SocketAddr,
    started: Instant,
    what: &str,
    child: &mut Option<&mut Child>,
) -> Duration {
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("a valid URI")
            .connect()
            .await
        {
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if answer.is_ok_and(|r| r.into_inner().status == 1) {
                return started.elapsed();
            }
        }
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("{what} exited with {status} before serving");
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "{what} did not become ready within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `flyte-connect` serving the components in `plugins` with `args`: (a)
/// with `echo.wasm`, (e) with `echo-py.wasm`.
pub async fn flyte_connect(
    name: &'static str,
    task_type: &'static str,
    plugins: &Path,
    args: &[&str],
) -> Target {
    flyte_connect_binary(&flyte_connect_e2e::binary(), name, task_type, plugins, args).await
}

/// Like [`flyte_connect`], running `binary` (the baseline build).
pub async fn flyte_connect_binary(
    binary: &Path,
    name: &'static str,
    task_type: &'static str,
    plugins: &Path,
    args: &[&str],
) -> Target {
    flyte_connect_with_env(binary, name, task_type, plugins, args, &[]).await
}

/// Like [`flyte_connect_binary`], with `env` added to the server's
/// environment ((h): the OpenTelemetry exporter's).
pub async fn flyte_connect_with_env(
    binary: &Path,
    name: &'static str,
    task_type: &'static str,
    plugins: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Target {
    let started = Instant::now();
    let dir = plugins.display().to_string();
    let mut all = vec!["--plugin-dir", dir.as_str()];
    all.extend_from_slice(args);
    let server = Server::start_binary_on(binary, 0, &all, plugins, env);
    let addr = server.grpc_addr;
    let ready_after = wait_ready(addr, started, "flyte-connect", &mut None).await;
    Target {
        name,
        task_type,
        addr,
        ready_after,
        process: Process::Harness(server),
    }
}

/// CPU time (user and system, all threads) process `pid` has used.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command, is in parentheses and may hold spaces; proc(5)
    // numbers the fields after it from 3, so utime (14) and stime (15) are
    // the 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| Duration::from_secs_f64((utime + stime) as f64 / ticks as f64))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// (b) the Python server with its echo connector, from the venv at `venv`.
pub async fn python(venv: &Path) -> Target {
    let connectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python");
    python_serving(
        venv,
        "(b) Python c0, echo connector",
        "echo",
        "echo_connector",
        &connectors,
        &[],
        Stdio::null(),
    )
    .await
}

/// The Python server `c0` from the venv at `venv`, loading `module` (found
/// from `cwd`, or installed in the venv) with `env` added to its
/// environment and its log written to `log`; its connector serves
/// `task_type`.
pub async fn python_serving(
    venv: &Path,
    name: &'static str,
    task_type: &'static str,
    module: &str,
    cwd: &Path,
    env: &[(&str, &str)],
    log: Stdio,
) -> Target {
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new(venv.join("bin/c0"))
        .args(["--port", &port.to_string()])
        .args(["--prometheus_port", &free_port().to_string()])
        .args(["--modules", module])
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the Python connector server (c0)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ready_after = wait_ready(addr, started, "c0", &mut Some(&mut child)).await;
    Target {
        name,
        task_type,
        addr,
        ready_after,
        process: Process::Child(child),
    }
}

/// (c) or (d): this binary again, serving `mode` (`native` or `bare`).
pub async fn this_binary(mode: &str) -> Target {
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().expect("the benchmark's own path"))
        .args(["--serve", mode, "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the benchmark's own server");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ready_after = wait_ready(addr, started, mode, &mut Some(&mut child)).await;
    let name = match mode {
        "native" => "(c) flyte-connect, native echo",
        _ => "(d) bare tonic, no work",
    };
    Target {
        name,
        task_type: "echo",
        addr,
        ready_after,
        process: Process::Child(child),
    }
}

/// Serves `mode` on `port` until killed (the child side of [`this_binary`]).
pub fn serve(mode: &str, port: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match mode {
        "native" => {
            let no_plugins = Workspace::new();
            let config = ServerConfig {
                host: [127, 0, 0, 1].into(),
                port,
                prometheus_port: 0,
                plugin_dirs: vec![no_plugins.path().to_owned()],
                reload_interval: None,
                ..ServerConfig::default()
            };
            let service = ConnectorService::new(config)
                .with_connector(NativeConnector::<echo::Echo>::shared());
            runtime
                .block_on(service.run())
                .expect("serve the native echo connector");
        }
        "bare" => runtime.block_on(serve_bare(port)),
        other => panic!("unknown server {other:?}"),
    }
}

/// (d): answers create, get and delete at once.
struct Bare;

#[tonic::async_trait]
impl AsyncConnectorService for Bare {
    async fn create_task(
        &self,
        _: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        Ok(Response::new(pb::CreateTaskResponse {
            resource_meta: b"{}".to_vec(),
        }))
    }

    async fn get_task(
        &self,
        _: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        Ok(Response::new(pb::GetTaskResponse {
            resource: Some(pb::Resource {
                phase: Phase::Succeeded as i32,
                ..Default::default()
            }),
        }))
    }

    async fn delete_task(
        &self,
        _: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        Ok(Response::new(pb::DeleteTaskResponse {}))
    }

    async fn get_task_metrics(
        &self,
        _: Request<pb::GetTaskMetricsRequest>,
    ) -> Result<Response<pb::GetTaskMetricsResponse>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    type GetTaskLogsStream = tokio_stream::Empty<Result<pb::GetTaskLogsResponse, Status>>;

    async fn get_task_logs(
        &self,
        _: Request<pb::GetTaskLogsRequest>,
    ) -> Result<Response<Self::GetTaskLogsStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }
}

async fn serve_bare(port: u16) {
    let (_health, health_service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the bare server's port");
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AsyncConnectorServiceServer::new(Bare))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .expect("serve the bare server");
}
