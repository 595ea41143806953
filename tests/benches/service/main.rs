//! `make bench`: create → get → delete cycles of an echo task at 1, 16 and
//! 256 concurrent clients against five servers measured in the same run —
//! flyte-connect with `echo.wasm`, the Python server it replaces, the same
//! echo compiled natively in process, a bare tonic server, flyte-connect
//! with the Python twin `echo-py.wasm`, and both echoes again with
//! `instance_reuse = "connection"`, and (a) again exporting a trace of
//! every call — and the ratios between them, so the
//! numbers mean the same on any machine.
//!
//! For the Python guest also: its compile and cached load times, each call's
//! instantiate / call / release parts, and memory per call in flight
//! (`python_guest`).
//!
//! Also: peak memory (RSS) of each server, and how long each takes to serve
//! its first call; for flyte-connect with five components, from a cold and
//! from a warm compile cache. And what one poll (GetTask) of the service
//! connectors costs against loopback fakes, signing included (`polls`), and
//! a running Slurm job's poll over SSH beside `flyteplugins-slurm` under the
//! Python server (`slurm`).
//!
//! `-- --polls` runs only the poll costs, `-- --slurm` only the Slurm polls. `BENCH_SECONDS` sets the seconds
//! per load level (default 5);
//! `BENCH_PYTHON_VENV` the venv holding the `flyte` package (default `.venv`).
//!
//! To compare a change with the build before it in the same run, set
//! `BENCH_BASELINE_BIN` to the other `flyte-connect` binary and
//! `BENCH_BASELINE_COMPONENTS` to the folder of its `echo.wasm` and
//! `echo-py.wasm`: rows (a′) and (e′) serve them, beside (a) and (e), with
//! the ratios between them (and `egress` its `databricks.wasm`).

mod egress;
mod load;
mod polls;
mod python_guest;
mod servers;
mod slurm;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use flyte_connect_e2e::{Workspace, otlp::Collector, status_kib};

use self::{load::LoadReport, servers::Target};

const LEVELS: [usize; 3] = [1, 16, 256];
const RUST_ECHO: &str = "(a) flyte-connect, echo.wasm";
const PYTHON_ECHO: &str = "(e) flyte-connect, echo-py.wasm (Python guest)";
const PYTHON_ECHO_REUSE: &str = "(f) flyte-connect, echo-py.wasm, instance_reuse = \"connection\"";
const RUST_ECHO_REUSE: &str = "(g) flyte-connect, echo.wasm, instance_reuse = \"connection\"";
const PYTHON_ECHO_SYNC_REUSE: &str =
    "(i) flyte-connect, echo-py-sync.wasm (the sync world), instance_reuse = \"connection\"";
const RUST_ECHO_TRACED: &str =
    "(h) flyte-connect, echo.wasm, traces exported (OTLP to a loopback collector, 100% sampled)";
const BASELINE_RUST_ECHO: &str = "(a′) baseline build, its echo.wasm";
const BASELINE_PYTHON_ECHO: &str = "(e′) baseline build, its echo-py.wasm";
/// The manifest line opting a plugin into instance reuse.
const REUSE_MANIFEST: &str = "instance_reuse = \"connection\"\n";

/// Another build to measure beside this one: its binary and the folder of
/// its components.
struct Baseline {
    binary: PathBuf,
    components: PathBuf,
}

impl Baseline {
    /// From `BENCH_BASELINE_BIN` and `BENCH_BASELINE_COMPONENTS`, when both are set.
    fn from_env() -> Option<Self> {
        Some(Self {
            binary: std::env::var_os("BENCH_BASELINE_BIN")?.into(),
            components: std::env::var_os("BENCH_BASELINE_COMPONENTS")?.into(),
        })
    }

    /// The baseline serving its own `component` (`echo`, `echo-py`).
    async fn serve(
        &self,
        name: &'static str,
        component: &str,
        task_type: &'static str,
    ) -> (Workspace, Target) {
        let plugins = Workspace::new();
        let file = format!("{component}.wasm");
        std::fs::copy(self.components.join(&file), plugins.path().join(&file))
            .unwrap_or_else(|e| panic!("baseline component {file}: {e}"));
        let target =
            servers::flyte_connect_binary(&self.binary, name, task_type, plugins.path(), &[]).await;
        (plugins, target)
    }
}
const WARM_UP: Duration = Duration::from_secs(1);

/// One server's results.
struct Measured {
    name: &'static str,
    levels: Vec<LoadReport>,
    /// The server process's CPU time (utime + stime) in each level.
    cpu: Vec<Option<Duration>>,
    peak_rss_kib: Option<u64>,
    /// Resident set right after the last (256-client) level.
    rss_after_kib: Option<u64>,
    /// Instances flyte-connect started afresh over the run (warm-up included).
    fresh_instances: Option<f64>,
    ready_after: Duration,
}

impl Measured {
    fn at(&self, clients: usize) -> Option<&LoadReport> {
        self.levels.iter().find(|r| r.clients == clients)
    }

    /// The server's CPU time per successful cycle at `clients`.
    fn cpu_per_cycle(&self, clients: usize) -> Option<Duration> {
        let at = self.levels.iter().position(|r| r.clients == clients)?;
        let cycles = u32::try_from(self.levels[at].cycles)
            .ok()
            .filter(|&n| n > 0)?;
        Some((*self.cpu.get(at)?)? / cycles)
    }
}

async fn measure(target: Target, seconds: Duration) -> Measured {
    eprintln!("measuring {} ...", target.name);
    load::run(target.addr, target.task_type, 16, WARM_UP).await;
    let mut levels = Vec::new();
    let mut cpu = Vec::new();
    for clients in LEVELS {
        let before = servers::cpu_time(target.pid());
        levels.push(load::run(target.addr, target.task_type, clients, seconds).await);
        let after = servers::cpu_time(target.pid());
        cpu.push(
            after
                .zip(before)
                .map(|(after, before)| after.saturating_sub(before)),
        );
    }
    Measured {
        name: target.name,
        levels,
        cpu,
        peak_rss_kib: target.peak_rss_kib(),
        rss_after_kib: status_kib(target.pid(), "VmRSS"),
        fresh_instances: target.fresh_instances(),
        ready_after: target.ready_after,
    }
}

/// flyte-connect serving `component` with a manifest that opts into
/// instance reuse.
async fn with_reuse(
    name: &'static str,
    component: &str,
    task_type: &'static str,
    cache_dir: &str,
) -> (Workspace, Target) {
    let plugins = Workspace::with_components(&[component]);
    plugins.write(&format!("{component}.toml"), REUSE_MANIFEST.as_bytes());
    let target =
        servers::flyte_connect(name, task_type, plugins.path(), &["--cache-dir", cache_dir]).await;
    (plugins, target)
}

/// Time for flyte-connect to serve with five components, with an empty and
/// then a filled compile cache.
async fn five_component_start(cache: &Path) -> (Duration, Duration) {
    let plugins = Workspace::new();
    // Distinct bytes, so each is compiled on its own when the cache is cold;
    // echo.wasm itself is among them, so (a) later starts from a warm cache.
    plugins.add_component("echo", "echo.wasm");
    plugins.add_component("faulty", "faulty.wasm");
    for (name, file) in [
        ("echo", "echo-2.wasm"),
        ("echo", "echo-3.wasm"),
        ("faulty", "faulty-2.wasm"),
    ] {
        plugins.add_variant(name, file, file);
    }
    let cache_dir = cache.display().to_string();
    let args = ["--cache-dir", cache_dir.as_str()];
    let cold = servers::flyte_connect(RUST_ECHO, "echo", plugins.path(), &args)
        .await
        .ready_after;
    let warm = servers::flyte_connect(RUST_ECHO, "echo", plugins.path(), &args)
        .await
        .ready_after;
    (cold, warm)
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn report(results: &[Measured], five: (Duration, Duration), seconds: Duration) {
    println!();
    println!(
        "create → get → delete cycles of `echo` (one integer input), {}s per level, clients share \
         up to {} connections, load generator on the same machine",
        seconds.as_secs(),
        load::MAX_CONNECTIONS
    );
    println!();
    println!(
        "| server | clients | cycles/s | p50 | p99 | errors |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for m in results {
        for r in &m.levels {
            let errors = if r.errors.is_empty() {
                "0".to_owned()
            } else {
                r.errors
                    .iter()
                    .map(|(code, n)| format!("{n} {code}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                m.name,
                r.clients,
                thousands(r.rate()),
                ms(r.quantile(0.5)),
                ms(r.quantile(0.99)),
                errors
            );
        }
    }
    println!();
    println!(
        "| server | peak RSS | RSS after 256 clients | ready after |\n| --- | ---: | ---: | ---: |"
    );
    let mib = |kib: Option<u64>| {
        kib.map_or("?".to_owned(), |kib| {
            format!("{:.1} MiB", kib as f64 / 1024.0)
        })
    };
    for m in results {
        println!(
            "| {} | {} | {} | {} |",
            m.name,
            mib(m.peak_rss_kib),
            mib(m.rss_after_kib),
            ms(m.ready_after)
        );
    }
    println!(
        "| (a) with 5 components, cold compile cache | | {} |",
        ms(five.0)
    );
    println!(
        "| (a) with 5 components, warm compile cache | | {} |",
        ms(five.1)
    );

    python_guests_table(results);

    let find = |prefix: &str| results.iter().find(|m| m.name.starts_with(prefix));
    let (
        Some(wasm),
        Some(python),
        Some(native),
        Some(bare),
        Some(python_guest),
        Some(python_reuse),
        Some(rust_reuse),
    ) = (
        find("(a)"),
        find("(b)"),
        find("(c)"),
        find("(d)"),
        find("(e)"),
        find("(f)"),
        find("(g)"),
    )
    else {
        return;
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "?".to_owned(),
    };
    let rate = |m: &Measured, c| m.at(c).map(LoadReport::rate);
    let p = |m: &Measured, c, q| m.at(c).map(|r| r.quantile(q).as_secs_f64());
    let rss = |m: &Measured| m.peak_rss_kib.map(|k| k as f64);
    let rss_after = |m: &Measured| m.rss_after_kib.map(|k| k as f64);
    let traced = find("(h)");
    let sync_reuse = find("(i)");
    let rows = [
        (
            "256 clients, throughput, (h) traced / (a) untraced",
            ratio(traced.and_then(|t| rate(t, 256)), rate(wasm, 256)),
            "",
        ),
        (
            "1 client, cycle p50, (h) traced / (a) untraced",
            ratio(traced.and_then(|t| p(t, 1, 0.5)), p(wasm, 1, 0.5)),
            "",
        ),
        (
            "1 client, cycle p50, (a) / (d) bare tonic",
            ratio(p(wasm, 1, 0.5), p(bare, 1, 0.5)),
            "≤ 1.5x",
        ),
        (
            "256 clients, throughput, (a) / (b) Python",
            ratio(rate(wasm, 256), rate(python, 256)),
            "≥ 8x",
        ),
        (
            "16 clients, p99, (a) / (b) Python",
            ratio(p(wasm, 16, 0.99), p(python, 16, 0.99)),
            "≤ 0.25x",
        ),
        (
            "256 clients, throughput, (a) / (c) native",
            ratio(rate(wasm, 256), rate(native, 256)),
            "",
        ),
        (
            "256 clients, throughput, (a) / (d) bare tonic",
            ratio(rate(wasm, 256), rate(bare, 256)),
            "",
        ),
        (
            "peak RSS, (a) / (b) Python",
            ratio(rss(wasm), rss(python)),
            "",
        ),
        (
            "1 client, cycle p50, (e) Python guest / (a) Rust guest",
            ratio(p(python_guest, 1, 0.5), p(wasm, 1, 0.5)),
            "",
        ),
        (
            "1 client, cycle p50, (e) Python guest / (b) Python server",
            ratio(p(python_guest, 1, 0.5), p(python, 1, 0.5)),
            "",
        ),
        (
            "256 clients, throughput, (e) Python guest / (b) Python server",
            ratio(rate(python_guest, 256), rate(python, 256)),
            "",
        ),
        (
            "peak RSS, (e) Python guest / (b) Python server",
            ratio(rss(python_guest), rss(python)),
            "",
        ),
        (
            "16 clients, throughput, (e) Python guest / (b) Python server",
            ratio(rate(python_guest, 16), rate(python, 16)),
            "",
        ),
        (
            "16 clients, throughput, (f) Python guest with reuse / (b) Python server",
            ratio(rate(python_reuse, 16), rate(python, 16)),
            "≥ 1x",
        ),
        (
            "256 clients, throughput, (f) Python guest with reuse / (b) Python server",
            ratio(rate(python_reuse, 256), rate(python, 256)),
            "≥ 3x",
        ),
        (
            "RSS after 256 clients, (f) Python guest with reuse / (b) Python server",
            ratio(rss_after(python_reuse), rss_after(python)),
            "≤ 1x",
        ),
        (
            "1 client, throughput, (f) the async world / (i) the sync world, both with reuse",
            ratio(rate(python_reuse, 1), sync_reuse.and_then(|m| rate(m, 1))),
            "",
        ),
        (
            "16 clients, throughput, (f) the async world / (i) the sync world",
            ratio(rate(python_reuse, 16), sync_reuse.and_then(|m| rate(m, 16))),
            "",
        ),
        (
            "256 clients, throughput, (f) the async world / (i) the sync world",
            ratio(
                rate(python_reuse, 256),
                sync_reuse.and_then(|m| rate(m, 256)),
            ),
            "",
        ),
        (
            "RSS after 256 clients, (f) the async world / (i) the sync world",
            ratio(rss_after(python_reuse), sync_reuse.and_then(rss_after)),
            "",
        ),
        (
            "256 clients, throughput, (i) the sync world with reuse / (b) Python server",
            ratio(sync_reuse.and_then(|m| rate(m, 256)), rate(python, 256)),
            "",
        ),
        (
            "16 clients, throughput, (f) with reuse / (e) without",
            ratio(rate(python_reuse, 16), rate(python_guest, 16)),
            "",
        ),
        (
            "256 clients, throughput, (f) with reuse / (e) without",
            ratio(rate(python_reuse, 256), rate(python_guest, 256)),
            "",
        ),
        (
            "256 clients, throughput, (g) Rust echo with reuse / (a) without",
            ratio(rate(rust_reuse, 256), rate(wasm, 256)),
            "",
        ),
    ];
    println!();
    println!("| ratio | measured | target |\n| --- | ---: | ---: |");
    for (what, measured, target) in rows {
        println!("| {what} | {measured} | {target} |");
    }
    for (this, baseline, what) in [("(a)", "(a′)", "Rust echo"), ("(e)", "(e′)", "Python echo")]
    {
        let (Some(this), Some(baseline)) = (find(this), find(baseline)) else {
            continue;
        };
        for clients in LEVELS {
            println!(
                "| {clients} clients, throughput, {what}: this build / the baseline | {} | |",
                ratio(rate(this, clients), rate(baseline, clients))
            );
        }
    }
    for m in [wasm, python_reuse, rust_reuse] {
        let errors: u64 = m.levels.iter().map(LoadReport::error_count).sum();
        println!("| errors of {}, all levels | {errors} | 0 |", &m.name[..3]);
    }
}

/// The Python guest's rows beside the Python server's: throughput, the
/// server's CPU per cycle, its memory after the run and the instances it
/// started (issue 28's figures).
fn python_guests_table(results: &[Measured]) {
    let rows: Vec<&Measured> = ["(b)", "(e)", "(f)", "(i)"]
        .iter()
        .filter_map(|prefix| results.iter().find(|m| m.name.starts_with(prefix)))
        .collect();
    println!();
    println!(
        "Python: the guest in each world beside the Python server (CPU is the server process's \
         utime + stime per cycle; instances are those started afresh over the run, warm-up \
         included)"
    );
    println!();
    let mut header = "| server |".to_owned();
    let mut rule = "| --- |".to_owned();
    for clients in LEVELS {
        header.push_str(&format!(
            " {clients}: cycles/s | {clients}: CPU per cycle |"
        ));
        rule.push_str(" ---: | ---: |");
    }
    println!("{header} RSS after 256 | instances started |");
    println!("{rule} ---: | ---: |");
    for m in rows {
        let mut line = format!("| {} |", m.name);
        for clients in LEVELS {
            let rate = m
                .at(clients)
                .map_or("?".to_owned(), |r| thousands(r.rate()));
            let cpu = m.cpu_per_cycle(clients).map_or("?".to_owned(), |d| {
                format!("{:.2} ms", d.as_secs_f64() * 1e3)
            });
            line.push_str(&format!(" {rate} | {cpu} |"));
        }
        let rss = m.rss_after_kib.map_or("?".to_owned(), |kib| {
            format!("{:.1} MiB", kib as f64 / 1024.0)
        });
        let instances = m.fresh_instances.map_or("—".to_owned(), thousands);
        println!("{line} {rss} | {instances} |");
    }
}

/// `BENCH_SECONDS`: seconds per load level (default 5).
fn bench_seconds() -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

/// `BENCH_PYTHON_VENV`: the venv holding the `flyte` package (default `.venv`).
fn python_venv() -> PathBuf {
    std::env::var_os("BENCH_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let mode = args.get(i + 1).map(String::as_str).unwrap_or_default();
        let port = args
            .iter()
            .position(|a| a == "--port")
            .and_then(|i| args.get(i + 1))
            .and_then(|p| p.parse().ok())
            .expect("--serve needs --port PORT");
        servers::serve(mode, port);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--load") {
        // `--load ADDR CLIENTS SECONDS [TASK_TYPE]`: only the load generator,
        // against a server started by hand (for profiling).
        let arg = |n: usize| args.get(i + n).cloned().unwrap_or_default();
        let usage = "--load ADDR CLIENTS SECONDS [TASK_TYPE]";
        let addr = arg(1).parse().expect(usage);
        let clients = arg(2).parse().expect(usage);
        let seconds = arg(3).parse().expect(usage);
        let task_type = if arg(4) == "echo_py" {
            "echo_py"
        } else {
            "echo"
        };
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let r = runtime.block_on(load::run(
            addr,
            task_type,
            clients,
            Duration::from_secs(seconds),
        ));
        println!(
            "{clients} clients: {} cycles/s, p50 {}, p99 {}, errors {:?}",
            thousands(r.rate()),
            ms(r.quantile(0.5)),
            ms(r.quantile(0.99)),
            r.errors
        );
        return;
    }
    if args.iter().any(|a| a == "--python-guest") {
        // `--python-guest`: only the Python guest's load, call and memory figures.
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let cache = Workspace::new();
        python_guest::report(&runtime.block_on(python_guest::measure(cache.path())));
        return;
    }
    if args.iter().any(|a| a == "--polls") {
        // `--polls`: only the service connectors' GetTask costs.
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        polls::report(&runtime.block_on(polls::measure()));
        return;
    }
    let seconds = bench_seconds();
    let venv = python_venv();
    if args.iter().any(|a| a == "--slurm") {
        // `--slurm`: only the Slurm polls, against the harness's cluster.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        slurm::report(&runtime.block_on(slurm::measure(seconds, &venv)), seconds);
        return;
    }
    if args.iter().any(|a| a == "--egress") {
        // `--egress`: only the Databricks polls over pooled loopback HTTPS.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        egress::report(&runtime.block_on(egress::measure(seconds, &venv)), seconds);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        // The compile cache these fill makes (a)'s start below a warm one.
        let cache = Workspace::new();
        let cache_dir = cache.path().display().to_string();
        let five = five_component_start(cache.path()).await;
        let plugins = Workspace::with_components(&["echo"]);
        let mut results = Vec::new();
        // One server at a time, each alone with the load generator.
        let wasm = servers::flyte_connect(
            RUST_ECHO,
            "echo",
            plugins.path(),
            &["--cache-dir", &cache_dir],
        )
        .await;
        results.push(measure(wasm, seconds).await);
        // The same with every call traced and exported.
        let collector = Collector::start().await;
        let mut env = collector.env();
        env.push(("OTEL_TRACES_SAMPLER", "always_on".to_owned()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let traced = servers::flyte_connect_with_env(
            &flyte_connect_e2e::binary(),
            RUST_ECHO_TRACED,
            "echo",
            plugins.path(),
            &["--cache-dir", &cache_dir],
            &env,
        )
        .await;
        results.push(measure(traced, seconds).await);
        let exported = collector.spans().len();
        assert!(exported > 0, "(h) exported no spans");
        println!("(h) exported {exported} spans");
        let baseline = Baseline::from_env();
        if let Some(baseline) = &baseline {
            let (_plugins, target) = baseline.serve(BASELINE_RUST_ECHO, "echo", "echo").await;
            results.push(measure(target, seconds).await);
        }
        results.push(measure(servers::python(&venv).await, seconds).await);
        results.push(measure(servers::this_binary("native").await, seconds).await);
        results.push(measure(servers::this_binary("bare").await, seconds).await);
        // The Python guest's figures first: they fill the compile cache (i) starts from.
        let python_guest = python_guest::measure(cache.path()).await;
        let python_plugins = Workspace::with_components(&["echo-py"]);
        let echo_py = servers::flyte_connect(
            PYTHON_ECHO,
            "echo_py",
            python_plugins.path(),
            &["--cache-dir", &cache_dir],
        )
        .await;
        results.push(measure(echo_py, seconds).await);
        let (_python_reuse, target) =
            with_reuse(PYTHON_ECHO_REUSE, "echo-py", "echo_py", &cache_dir).await;
        results.push(measure(target, seconds).await);
        let (_python_sync_reuse, target) = with_reuse(
            PYTHON_ECHO_SYNC_REUSE,
            "echo-py-sync",
            "echo_py",
            &cache_dir,
        )
        .await;
        results.push(measure(target, seconds).await);
        let (_rust_reuse, target) = with_reuse(RUST_ECHO_REUSE, "echo", "echo", &cache_dir).await;
        results.push(measure(target, seconds).await);
        if let Some(baseline) = &baseline {
            let (_plugins, target) = baseline
                .serve(BASELINE_PYTHON_ECHO, "echo-py", "echo_py")
                .await;
            results.push(measure(target, seconds).await);
        }
        report(&results, five, seconds);
        python_guest::report(&python_guest);
        polls::report(&polls::measure().await);
        egress::report(&egress::measure(seconds, &venv).await, seconds);
        slurm::report(&slurm::measure(seconds, &venv).await, seconds);
    });
}
