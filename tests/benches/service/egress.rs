//! What a Databricks poll costs once the connector's outbound HTTP leaves
//! the sandbox (issue 16): GetTask of one task, over loopback HTTPS to a
//! fake workspace behind a private CA, with flyte-connect's pooled
//! keep-alive client, beside the Python server `c0` serving Flyte's own
//! Databricks connector (`flyteplugins.databricks.connector`: aiohttp with a
//! new `ClientSession`, so a new connection and TLS handshake, per call).
//!
//! Rows, one server at a time, each creating its task through itself:
//!
//! 1. flyte-connect, `databricks.wasm` (Rust SDK), HTTPS, the CA from
//!    `--ca-file`;
//! 2. flyte-connect, `databricks-py.wasm` (Python SDK), the same; row 2r
//!    again with `instance_reuse = "connection"`, as its shipped manifest
//!    says (issue 17), where its calls share instances (the async world,
//!    issue 28); row 2s the same built for the sync world
//!    (`databricks-py-sync.wasm`), one call per instance;
//! 3. flyte-connect, `databricks.wasm`, plain HTTP;
//! 4. with `BENCH_BASELINE_BIN`: that build with its own `databricks.wasm`
//!    over plain HTTP (a build from before pooling trusts no private CA);
//! 5. the anchor: `c0`, HTTPS, the CA from `SSL_CERT_FILE` (aiohttp's
//!    default context is `ssl.create_default_context()`, whose
//!    `set_default_verify_paths` reads OpenSSL's `SSL_CERT_FILE`).
//!
//! Each level (1, 16 and 64 clients for `BENCH_SECONDS`) reports GetTask/s,
//! p50, p99, the CPU time of the server's own process per call (`utime +
//! stime` of `/proc/PID/stat`; the fake and the load generator run in this
//! process, so neither is counted) and the connections the fake accepted per
//! 100 calls; each row, the server's resident set after its last level and
//! the instances it started. `-- --egress` runs only these rows.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use axum::http::Version;
use flyte_connect::proto::{
    connector::{
        CreateTaskRequest, GetTaskRequest,
        async_connector_service_client::AsyncConnectorServiceClient,
    },
    core::task_execution::Phase,
};
use flyte_connect_e2e::{
    Workspace,
    endpoint::{Endpoint, Serve, TlsServer},
    fake_databricks::{self, FakeDatabricks},
    hosted::connection,
    literals::category,
    pki::TestPki,
};

use super::{
    Baseline, WARM_UP,
    load::{LoadReport, MAX_CONNECTIONS, connect, polls},
    servers::{self, Target, cpu_time},
};

/// Concurrent clients of each level.
const LEVELS: [usize; 3] = [1, 16, 64];
/// Clients of the unmeasured warm-up.
const WARM_UP_CLIENTS: usize = 16;
/// The only token the fake accepts.
const TOKEN: &str = "dapi-bench-egress-0123456789";
/// The task type every row serves.
const TASK_TYPE: &str = "databricks";

const RUST_HTTPS: &str = "(1) flyte-connect, databricks.wasm, HTTPS";
const PYTHON_GUEST_HTTPS: &str = "(2) flyte-connect, databricks-py.wasm, HTTPS";
const PYTHON_GUEST_REUSE_HTTPS: &str =
    "(2r) flyte-connect, databricks-py.wasm, HTTPS, instance_reuse = \"connection\"";
const PYTHON_GUEST_SYNC_REUSE_HTTPS: &str = "(2s) flyte-connect, databricks-py-sync.wasm (the sync world), HTTPS, instance_reuse = \"connection\"";
const RUST_PLAIN: &str = "(3) flyte-connect, databricks.wasm, plain HTTP";
const BASELINE_PLAIN: &str = "(4) baseline build, its databricks.wasm, plain HTTP";
const ANCHOR: &str = "(5) Python c0, flyteplugins Databricks connector, HTTPS";

/// What one level measured.
pub struct Level {
    /// Calls, latencies and errors; a "cycle" here is one GetTask.
    pub load: LoadReport,
    /// CPU time the server's process spent during the level.
    pub cpu: Option<Duration>,
    /// Connections the fake accepted during the level.
    pub connections: usize,
    /// One message for each kind of error, as the first client saw it.
    pub messages: BTreeMap<String, String>,
}

impl Level {
    /// The server's CPU time per successful call.
    fn cpu_per_call(&self) -> Option<Duration> {
        let calls = u32::try_from(self.load.cycles).ok().filter(|&n| n > 0)?;
        Some(self.cpu? / calls)
    }

    /// New connections per 100 successful calls.
    fn connections_per_100(&self) -> Option<f64> {
        (self.load.cycles > 0).then(|| self.connections as f64 * 100.0 / self.load.cycles as f64)
    }
}

/// One server's results, or why it could not be measured.
pub struct Row {
    /// What it is, for the report.
    pub name: &'static str,
    /// Its levels, in [`LEVELS`] order.
    pub levels: Vec<Level>,
    /// The HTTP versions the fake saw on the row's connections.
    pub versions: Vec<Version>,
    /// From spawning the server to its first SERVING health check.
    pub ready_after: Duration,
    /// Why the row has no levels (its CreateTask failed).
    pub failure: Option<String>,
    /// The server's resident set after its last level, in KiB.
    pub rss_after_kib: Option<u64>,
    /// Instances flyte-connect started afresh over the row.
    pub fresh_instances: Option<f64>,
}

impl Row {
    fn at(&self, clients: usize) -> Option<&Level> {
        self.levels.iter().find(|l| l.load.clients == clients)
    }
}

/// Creates the row's one task through the server at `addr`, for workspace
/// `instance`; its resource meta.
async fn create(addr: SocketAddr, instance: &str) -> Result<Vec<u8>, tonic::Status> {
    let request = CreateTaskRequest {
        template: Some(fake_databricks::task_template(
            instance,
            fake_databricks::job_conf("bench-egress"),
        )),
        connection: Some(connection(&[("databricks_token", TOKEN)])),
        ..Default::default()
    };
    let answer = AsyncConnectorServiceClient::new(connect(addr).await)
        .create_task(request)
        .await?;
    Ok(answer.into_inner().resource_meta)
}

/// `clients` clients polling `meta` on `target` for `duration`, with the
/// server's CPU time and the fake `fake`'s new connections around them.
async fn level(
    target: &Target,
    fake: &Endpoint,
    meta: &[u8],
    clients: usize,
    duration: Duration,
) -> Level {
    let request = GetTaskRequest {
        task_category: category(target.task_type),
        resource_meta: meta.to_vec(),
        connection: Some(connection(&[("databricks_token", TOKEN)])),
        ..Default::default()
    };
    let accepted_before = fake.connections_accepted();
    let cpu_before = cpu_time(target.pid());
    let (load, messages) = polls(
        target.addr,
        &request,
        |phase| phase == Phase::Succeeded,
        clients,
        duration,
    )
    .await;
    let cpu = cpu_time(target.pid())
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    Level {
        load,
        cpu,
        connections: fake.connections_accepted() - accepted_before,
        messages,
    }
}

/// Creates a task through `target` for workspace `instance`, warms up,
/// then measures every level against the fake serving at `fake`.
async fn measure_row(target: Target, fake: &Endpoint, instance: &str, seconds: Duration) -> Row {
    eprintln!("measuring {} ...", target.name);
    let first_connection = fake.connections_accepted();
    let mut row = Row {
        name: target.name,
        levels: Vec::new(),
        versions: Vec::new(),
        ready_after: target.ready_after,
        failure: None,
        rss_after_kib: None,
        fresh_instances: None,
    };
    match create(target.addr, instance).await {
        Ok(meta) => {
            level(&target, fake, &meta, WARM_UP_CLIENTS, WARM_UP).await;
            for clients in LEVELS {
                row.levels
                    .push(level(&target, fake, &meta, clients, seconds).await);
            }
        }
        Err(status) => {
            row.failure = Some(format!(
                "CreateTask: {:?}: {}",
                status.code(),
                status.message()
            ));
        }
    }
    row.rss_after_kib = flyte_connect_e2e::status_kib(target.pid(), "VmRSS");
    row.fresh_instances = target.fresh_instances();
    for accepted in fake.connections().iter().skip(first_connection) {
        if let Some(version) = accepted.version
            && !row.versions.contains(&version)
        {
            row.versions.push(version);
        }
    }
    row
}

/// A plugin folder holding `component` (from the test components, or from
/// `from` when given) with a manifest allowing `allowed` only, and saying
/// `extra` besides.
fn plugin_dir(component: &str, from: Option<&Path>, allowed: &str, extra: &str) -> Workspace {
    let plugins = match from {
        None => Workspace::with_components(&[component]),
        Some(dir) => {
            let plugins = Workspace::new();
            let file = format!("{component}.wasm");
            std::fs::copy(dir.join(&file), plugins.path().join(&file))
                .unwrap_or_else(|e| panic!("baseline component {file}: {e}"));
            plugins
        }
    };
    plugins.write(
        &format!("{component}.toml"),
        format!("allowed_hosts = [{allowed:?}]\n{extra}").as_bytes(),
    );
    plugins
}

/// The last `lines` lines of the file at `path` (empty when unreadable).
fn tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].to_vec()
}

/// Measures every row, one server at a time, against one fake workspace
/// served plain and over TLS; `venv` holds `c0` and `flyteplugins`.
pub async fn measure(seconds: Duration, venv: &Path) -> Vec<Row> {
    let pki = TestPki::new();
    let files = tempfile::tempdir().expect("a temporary folder");
    let ca = pki.ca().write(files.path(), "ca.pem").display().to_string();
    let fake = FakeDatabricks::start(TOKEN).await;
    let tls = fake
        .serve_also(Serve::tls(TlsServer::new(&pki.server())))
        .await;
    // The connectors call `https://INSTANCE` for an instance without a scheme.
    let https_instance = format!("localhost:{}", tls.addr().port());
    let https_allowed = format!("https://{https_instance}");
    let plain_instance = fake.base_url();
    let with_ca = ["--ca-file", ca.as_str()];
    let mut rows = Vec::new();

    for (name, component, extra) in [
        (RUST_HTTPS, "databricks", ""),
        (PYTHON_GUEST_HTTPS, "databricks-py", ""),
        (
            PYTHON_GUEST_REUSE_HTTPS,
            "databricks-py",
            super::REUSE_MANIFEST,
        ),
        (
            PYTHON_GUEST_SYNC_REUSE_HTTPS,
            "databricks-py-sync",
            super::REUSE_MANIFEST,
        ),
    ] {
        let plugins = plugin_dir(component, None, &https_allowed, extra);
        let target = servers::flyte_connect(name, TASK_TYPE, plugins.path(), &with_ca).await;
        rows.push(measure_row(target, &tls, &https_instance, seconds).await);
    }

    let plugins_plain = plugin_dir("databricks", None, &plain_instance, "");
    let target = servers::flyte_connect(RUST_PLAIN, TASK_TYPE, plugins_plain.path(), &[]).await;
    rows.push(measure_row(target, fake.endpoint(), &plain_instance, seconds).await);

    if let Some(baseline) = Baseline::from_env() {
        let plugins = plugin_dir(
            "databricks",
            Some(&baseline.components),
            &plain_instance,
            "",
        );
        let target = servers::flyte_connect_binary(
            &baseline.binary,
            BASELINE_PLAIN,
            TASK_TYPE,
            plugins.path(),
            &[],
        )
        .await;
        rows.push(measure_row(target, fake.endpoint(), &plain_instance, seconds).await);
    }

    let log_path: PathBuf = std::env::temp_dir().join("flyte-connect-bench-c0-databricks.log");
    let log = File::create(&log_path).expect("create the c0 log");
    eprintln!("c0 logs to {}", log_path.display());
    let target = servers::python_serving(
        venv,
        ANCHOR,
        TASK_TYPE,
        "flyteplugins.databricks.connector",
        files.path(),
        &[("SSL_CERT_FILE", ca.as_str())],
        Stdio::from(log),
    )
    .await;
    let anchor = measure_row(target, &tls, &https_instance, seconds).await;
    if anchor.failure.is_some() || anchor.levels.iter().any(|l| l.load.error_count() > 0) {
        eprintln!("the end of c0's log:");
        for line in tail(&log_path, 20) {
            eprintln!("  {line}");
        }
    }
    rows.push(anchor);
    rows
}

fn errors(load: &LoadReport) -> String {
    if load.errors.is_empty() {
        return "0".to_owned();
    }
    load.errors
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "1 client", "16 clients".
fn clients(n: usize) -> String {
    if n == 1 {
        "1 client".to_owned()
    } else {
        format!("{n} clients")
    }
}

fn micros(d: Option<Duration>) -> String {
    d.map_or("?".to_owned(), |d| {
        format!("{} µs", super::thousands(d.as_secs_f64() * 1e6))
    })
}

/// Prints the rows, and the ratios of rows 1, 2 and 2r (and 3 to 4) to the
/// anchor (the baseline).
pub fn report(rows: &[Row], seconds: Duration) {
    println!();
    println!(
        "GetTask of one Databricks task (created through each server) at 1, 16 and 64 concurrent \
         clients, {}s per level, clients share up to {MAX_CONNECTIONS} connections; the fake \
         workspace and the load generator run in the bench process on the same cores. CPU is the \
         server process's own (utime + stime) per successful call; connections are those the \
         fake accepted (their count in parentheses)",
        seconds.as_secs()
    );
    println!();
    println!(
        "| server | clients | GetTask/s | p50 | p99 | server CPU per call | new connections per 100 \
         calls | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in rows {
        if let Some(failure) = &row.failure {
            println!("| {} | | | | | | | {failure} |", row.name);
        }
        for level in &row.levels {
            let r = &level.load;
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                row.name,
                r.clients,
                super::thousands(r.rate()),
                super::ms(r.quantile(0.5)),
                super::ms(r.quantile(0.99)),
                micros(level.cpu_per_call()),
                level
                    .connections_per_100()
                    .map_or("?".to_owned(), |c| format!(
                        "{c:.2} ({})",
                        level.connections
                    )),
                errors(r)
            );
        }
    }
    println!();
    println!(
        "| server | HTTP on its connections | ready after | RSS after 64 clients | instances \
         started |\n| --- | --- | ---: | ---: | ---: |"
    );
    for row in rows {
        let versions = row
            .versions
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {} | {versions} | {} | {} | {} |",
            row.name,
            super::ms(row.ready_after),
            row.rss_after_kib.map_or("?".to_owned(), |kib| format!(
                "{:.1} MiB",
                kib as f64 / 1024.0
            )),
            row.fresh_instances.map_or("—".to_owned(), super::thousands),
        );
    }
    for row in rows {
        for level in &row.levels {
            for (kind, message) in &level.messages {
                println!(
                    "- {} at {}, {kind}: {message}",
                    row.name,
                    clients(level.load.clients)
                );
            }
        }
    }

    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "?".to_owned(),
    };
    let rate = |row: Option<&Row>, clients| {
        row?.at(clients)
            .filter(|l| l.load.cycles > 0)
            .map(|l| l.load.rate())
    };
    let cpu =
        |row: Option<&Row>, clients| row?.at(clients)?.cpu_per_call().map(|d| d.as_secs_f64());
    let anchor = find(ANCHOR);
    println!();
    println!("| ratio | measured | target |\n| --- | ---: | ---: |");
    for (this, what, rate_target, cpu_target) in [
        (RUST_HTTPS, "(1) Rust / (5) Python server", "≥ 1x", "≤ 0.5x"),
        (
            PYTHON_GUEST_HTTPS,
            "(2) Python guest / (5) Python server",
            "",
            "≤ 1x",
        ),
        (
            PYTHON_GUEST_REUSE_HTTPS,
            "(2r) Python guest with reuse / (5) Python server",
            "≥ 1x",
            "≤ 1x",
        ),
    ] {
        for n in LEVELS {
            println!(
                "| {}, GetTask/s, {what} | {} | {rate_target} |",
                clients(n),
                ratio(rate(find(this), n), rate(anchor, n))
            );
            println!(
                "| {}, CPU per call, {what} | {} | {cpu_target} |",
                clients(n),
                ratio(cpu(find(this), n), cpu(anchor, n))
            );
        }
    }
    let rss = |row: Option<&Row>| row?.rss_after_kib.map(|kib| kib as f64);
    println!(
        "| RSS after 64 clients, (2r) Python guest with reuse / (5) Python server | {} | ≤ 1x |",
        ratio(rss(find(PYTHON_GUEST_REUSE_HTTPS)), rss(anchor))
    );
    println!(
        "| RSS after 64 clients, (2r) the async world / (2s) the sync world | {} | |",
        ratio(
            rss(find(PYTHON_GUEST_REUSE_HTTPS)),
            rss(find(PYTHON_GUEST_SYNC_REUSE_HTTPS))
        )
    );
    for n in LEVELS {
        println!(
            "| {}, GetTask/s, (2r) the async world / (2s) the sync world | {} | |",
            clients(n),
            ratio(
                rate(find(PYTHON_GUEST_REUSE_HTTPS), n),
                rate(find(PYTHON_GUEST_SYNC_REUSE_HTTPS), n)
            )
        );
    }
    if let Some(baseline) = find(BASELINE_PLAIN) {
        let this = find(RUST_PLAIN);
        for n in LEVELS {
            println!(
                "| {}, GetTask/s, (3) pooled / (4) baseline, plain HTTP | {} | |",
                clients(n),
                ratio(rate(this, n), rate(Some(baseline), n))
            );
            println!(
                "| {}, CPU per call, (3) pooled / (4) baseline, plain HTTP | {} | |",
                clients(n),
                ratio(cpu(this, n), cpu(Some(baseline), n))
            );
        }
    }
}
