//! A small harness for end-to-end tests: start the real `flyte-connect`
//! binary on free loopback ports with real components, talk to it with gRPC
//! clients, read its metrics, and stop it the way a user would.
//!
//! The binary and the components come from the build (`make test` sets
//! `FLYTE_CONNECT_BIN` and `FLYTE_CONNECT_COMPONENTS`); by default they are
//! looked up under the workspace's `target/`.

pub mod cluster;
pub mod endpoint;
pub mod fake_bigquery;
pub mod fake_databricks;
pub mod fake_http;
pub mod fake_snowflake;
pub mod hosted;
pub mod isolation;
pub mod jwt;
pub mod literals;
pub mod native;
pub mod otlp;
pub mod pki;
pub mod proxy;
pub mod s3;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use flyte_connect::proto::connector::{
    ListConnectorsRequest, async_connector_service_client::AsyncConnectorServiceClient,
    connector_metadata_service_client::ConnectorMetadataServiceClient,
};
use tonic::transport::Channel;

use crate::isolation::{NetnsDialer, Wrapper};

/// How long a server may take to come up (a cold component cache compiles).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to stop after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The `flyte-connect` binary under test.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("FLYTE_CONNECT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/flyte-connect"));
    assert!(
        path.is_file(),
        "flyte-connect binary not found at {} (run `make test`, or set FLYTE_CONNECT_BIN)",
        path.display()
    );
    path
}

/// A compiled component by name (`echo`, `faulty`).
pub fn component(name: &str) -> PathBuf {
    let dir = std::env::var_os("FLYTE_CONNECT_COMPONENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/test-components"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "component {} not found (run `make test-components`, or set FLYTE_CONNECT_COMPONENTS)",
        path.display()
    );
    path
}

/// A scratch folder that acts as a plugin folder and working directory.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// An empty folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary folder"),
        }
    }

    /// A folder holding copies of the named components.
    pub fn with_components(names: &[&str]) -> Self {
        let workspace = Self::new();
        for name in names {
            workspace.add_component(name, &format!("{name}.wasm"));
        }
        workspace
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies component `name` into the folder as `file_name`.
    pub fn add_component(&self, name: &str, file_name: &str) -> PathBuf {
        let target = self.path().join(file_name);
        std::fs::copy(component(name), &target).expect("copy a component");
        target
    }

    /// Copies component `name` into the folder as `file_name`, with a custom
    /// section carrying `tag` appended: the same connector in other bytes,
    /// as a rebuilt version of it would be.
    pub fn add_variant(&self, name: &str, file_name: &str, tag: &str) -> PathBuf {
        let mut bytes = std::fs::read(component(name)).expect("read a component");
        append_custom_section(&mut bytes, "flyte-connect-test", tag.as_bytes());
        self.write(file_name, &bytes)
    }

    /// Writes a file into the folder.
    pub fn write(&self, file_name: &str, contents: &[u8]) -> PathBuf {
        let target = self.path().join(file_name);
        std::fs::write(&target, contents).expect("write a file");
        target
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends a custom section (id 0) named `name` to a component or module:
/// it changes the bytes, not the behaviour.
pub fn append_custom_section(wasm: &mut Vec<u8>, name: &str, payload: &[u8]) {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut section = Vec::new();
    leb128(name.len(), &mut section);
    section.extend_from_slice(name.as_bytes());
    section.extend_from_slice(payload);
    wasm.push(0);
    leb128(section.len(), wasm);
    wasm.extend_from_slice(&section);
}

/// Field `key` (a size in KiB, e.g. `VmRSS`) of process `pid`'s
/// `/proc/PID/status`.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `check` every 50 ms until it holds, failing the test with `what`
/// after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the server printed, shared with the threads that read it.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<String>>);

impl Output {
    /// Everything printed so far (stdout and stderr interleaved by line).
    pub fn text(&self) -> String {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Everything printed once `check` holds of it, waiting up to 10 s:
    /// what the server logs before it answers reaches this process through
    /// a pipe a thread reads, after the answer may have.
    pub async fn once(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text();
            if check(&text) || Instant::now() >= deadline {
                assert!(check(&text), "{what}: not logged within 10s:\n{text}");
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn push(&self, line: &str) {
        if let Ok(mut text) = self.0.lock() {
            text.push_str(line);
            text.push('\n');
        }
    }
}

/// A running `flyte-connect`.
pub struct Server {
    child: Child,
    /// Where gRPC is served.
    pub grpc_addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// What it printed.
    pub output: Output,
    /// How to reach it when it runs in a network namespace of its own.
    dialer: Option<Arc<NetnsDialer>>,
}

/// Spawns the binary with `args` in `cwd`, capturing both output streams.
/// Each line is also sent on the returned channel.
pub fn spawn(
    args: &[String],
    cwd: &Path,
    env: &[(&str, &str)],
) -> (Child, Output, mpsc::Receiver<String>) {
    spawn_binary(&binary(), args, cwd, env)
}

/// Like [`spawn`], running `binary` (another build of `flyte-connect`, as
/// the benchmark's baseline).
pub fn spawn_binary(
    binary: &Path,
    args: &[String],
    cwd: &Path,
    env: &[(&str, &str)],
) -> (Child, Output, mpsc::Receiver<String>) {
    spawn_wrapped(&Wrapper::default(), binary, args, cwd, env)
}

/// Like [`spawn_binary`], running `binary` under `wrapper`.
pub fn spawn_wrapped(
    wrapper: &Wrapper,
    binary: &Path,
    args: &[String],
    cwd: &Path,
    env: &[(&str, &str)],
) -> (Child, Output, mpsc::Receiver<String>) {
    let mut command = match wrapper.0.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("FLYTE_CONNECTOR_PATH")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start flyte-connect");
    let output = Output::default();
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
    for stream in [stdout, stderr].into_iter().flatten() {
        let output = output.clone();
        let lines_tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                output.push(&line);
                let _ = lines_tx.send(line);
            }
        });
    }
    (child, output, lines_rx)
}

fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    // The address ends at a space or a path, or at the closing quote of a
    // JSON log line's message.
    rest.split(|c: char| c.is_whitespace() || c == '/' || c == '"')
        .next()?
        .parse()
        .ok()
}

impl Server {
    /// Starts `flyte-connect c0` on free loopback ports with `args` added,
    /// in `cwd`, and waits until it serves.
    pub fn start(args: &[&str], cwd: &Path) -> Self {
        Self::start_with_env(args, cwd, &[])
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_on(0, args, cwd, env)
    }

    /// Like [`Server::start_with_env`], serving gRPC on loopback port `port`
    /// (0: a free one), as a replica restarted in place does.
    pub fn start_on(port: u16, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_binary_on(&binary(), port, args, cwd, env)
    }

    /// Like [`Server::start_on`], running `binary` instead of the build
    /// under test.
    pub fn start_binary_on(
        binary: &Path,
        port: u16,
        args: &[&str],
        cwd: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_wrapped(&Wrapper::default(), binary, port, args, cwd, env)
    }

    /// Like [`Server::start_with_env`], in a network namespace of its own
    /// with only loopback up (see [`isolation`]); the clients and
    /// [`Server::metrics_text`] reach it there.
    pub fn start_isolated(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Self {
        let mut server = Self::start_wrapped(&Wrapper::own_network(), &binary(), 0, args, cwd, env);
        let dialer = NetnsDialer::enter(server.pid())
            .unwrap_or_else(|err| panic!("join the server's network namespace: {err}"));
        server.dialer = Some(Arc::new(dialer));
        server
    }

    /// Like [`Server::start_binary_on`], running `binary` under `wrapper`.
    pub fn start_wrapped(
        wrapper: &Wrapper,
        binary: &Path,
        port: u16,
        args: &[&str],
        cwd: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let mut full: Vec<String> = [
            "c0",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--prometheus_port",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        full.extend(args.iter().map(|s| s.to_string()));
        let (mut child, output, lines) = spawn_wrapped(wrapper, binary, &full, cwd, env);
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut grpc_addr, mut metrics_addr) = (None, None);
        while grpc_addr.is_none() || metrics_addr.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    grpc_addr =
                        grpc_addr.or_else(|| address_after(&line, "gRPC server listening on "));
                    metrics_addr =
                        metrics_addr.or_else(|| address_after(&line, "metrics served on http://"));
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "flyte-connect exited with {status} before serving:\n{}",
                            output.text()
                        );
                    }
                    if left.is_zero() {
                        let _ = child.kill();
                        panic!(
                            "flyte-connect did not start within {START_TIMEOUT:?}:\n{}",
                            output.text()
                        );
                    }
                }
            }
        }
        Self {
            child,
            grpc_addr: grpc_addr.unwrap_or_else(|| unreachable!()),
            metrics_addr: metrics_addr.unwrap_or_else(|| unreachable!()),
            output,
            dialer: None,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A channel to the gRPC port.
    pub async fn channel(&self) -> Channel {
        let endpoint =
            Channel::from_shared(format!("http://{}", self.grpc_addr)).expect("a valid URI");
        match &self.dialer {
            None => endpoint.connect().await,
            Some(dialer) => {
                let (dialer, addr) = (Arc::clone(dialer), self.grpc_addr);
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let dialer = Arc::clone(&dialer);
                        async move {
                            let stream = dialer.connect(addr)?;
                            stream.set_nonblocking(true)?;
                            let stream = tokio::net::TcpStream::from_std(stream)?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }))
                    .await
            }
        }
        .expect("connect to flyte-connect")
    }

    /// A client of `AsyncConnectorService`.
    pub async fn tasks(&self) -> AsyncConnectorServiceClient<Channel> {
        AsyncConnectorServiceClient::new(self.channel().await)
    }

    /// A client of `ConnectorMetadataService`.
    pub async fn metadata(&self) -> ConnectorMetadataServiceClient<Channel> {
        ConnectorMetadataServiceClient::new(self.channel().await)
    }

    /// The names of the connectors ListConnectors reports, sorted.
    pub async fn connector_names(&self) -> Vec<String> {
        let listed = self
            .metadata()
            .await
            .list_connectors(ListConnectorsRequest {})
            .await
            .expect("ListConnectors")
            .into_inner();
        let mut names: Vec<String> = listed.connectors.into_iter().map(|c| c.name).collect();
        names.sort();
        names
    }

    /// The Prometheus text from `/metrics`.
    pub fn metrics_text(&self) -> String {
        if let Some(dialer) = &self.dialer {
            return dialer
                .get(self.metrics_addr, "/metrics")
                .expect("GET /metrics in the server's network namespace");
        }
        ureq::get(&format!("http://{}/metrics", self.metrics_addr))
            .call()
            .expect("GET /metrics")
            .into_body()
            .read_to_string()
            .expect("read /metrics")
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal_terminate();
        self.wait()
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_terminate(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a valid pid"));
        nix::sys::signal::kill(pid, signal).expect("send a signal");
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self) -> ExitStatus {
        wait_with_timeout(&mut self.child, STOP_TIMEOUT, &self.output)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` to exit, killing it and failing the test after `timeout`.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration, output: &Output) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                panic!(
                    "flyte-connect did not exit within {timeout:?}:\n{}",
                    output.text()
                );
            }
        }
    }
}

/// Runs the binary to completion with `args` in `cwd` (for command-line
/// cases that exit by themselves) and returns its status and output.
pub fn run_to_exit(args: &[&str], cwd: &Path, timeout: Duration) -> (ExitStatus, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut child, output, _lines) = spawn(&args, cwd, &[]);
    let status = wait_with_timeout(&mut child, timeout, &output);
    // Give the reader threads a moment to drain what was printed last.
    std::thread::sleep(Duration::from_millis(100));
    (status, output.text())
}

/// Reads one sample from Prometheus text: `name{labels} value`, with the
/// labels given in any order. `None` when there is no such sample.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let mut have: Vec<String> = label_text
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            have.sort();
            (metric == name && have == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
}
