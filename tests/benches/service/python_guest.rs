//! What a Python component (componentize-py, ~20 MB, CPython inside)
//! costs the host, against `echo-py-sync.wasm` and `faulty-py-sync.wasm`
//! (built for the sync world, so that every call has an instance of its
//! own to measure):
//!
//! - loading: the first start compiles it, a second start loads it from
//!   the compile cache;
//! - each call's parts, from the server's own `guest call` debug lines:
//!   instantiating the pre-initialized CPython, running the call, and
//!   returning the instance's memory to the pool;
//! - memory per call in flight: the server's RSS while 64 calls each await a
//!   one-second `asyncio.sleep` inside the guest, over its RSS at rest.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use flyte_connect::proto::core::SimpleType;
use flyte_connect_e2e::{
    Server, Workspace,
    literals::{self, TypedInputs, simple, string},
};

use crate::{load, servers};

/// Calls held in flight for the memory figure.
pub const IN_FLIGHT: usize = 64;

/// The figures of one run.
pub struct PythonGuestReport {
    /// Size of `echo-py-sync.wasm`.
    pub component_bytes: u64,
    /// Start to first SERVING health check, empty compile cache.
    pub cold_start: Duration,
    /// The same with the cache filled by the cold start.
    pub warm_start: Duration,
    /// Median microseconds of (instantiate, call, release), per function.
    pub parts: Vec<(String, [u64; 3])>,
    /// RSS at rest after a first call, when the server compiled `faulty-py-sync.wasm`.
    pub rss_after_compile: Rss,
    /// RSS at rest after a first call, when it loaded it from the cache.
    pub rss_idle: Rss,
    /// Highest RSS seen while [`IN_FLIGHT`] calls were in flight.
    pub rss_in_flight: Rss,
}

/// A process's resident memory, in KiB: all of it, and the private
/// (anonymous) part; the rest is file pages (the compiled code, and
/// the initial memory images mapped from it), shared with the page cache.
#[derive(Clone, Copy, Default)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
}

impl Rss {
    fn of(pid: u32) -> Self {
        Self {
            total: flyte_connect_e2e::status_kib(pid, "VmRSS").unwrap_or(0),
            anon: flyte_connect_e2e::status_kib(pid, "RssAnon").unwrap_or(0),
        }
    }

    fn max(self, other: Self) -> Self {
        Self {
            total: self.total.max(other.total),
            anon: self.anon.max(other.anon),
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// `key=value` of a log line, as a number.
fn field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn sleep_request(seconds: &str) -> flyte_connect::proto::connector::CreateTaskRequest {
    let inputs = TypedInputs(vec![
        ("fault", string("sleep"), simple(SimpleType::String)),
        ("seconds", string(seconds), simple(SimpleType::String)),
    ]);
    literals::create_request("faulty_py", &inputs)
}

/// Measures with the compile cache at `cache`, which must not hold
/// `echo-py-sync.wasm` yet: the first start is the cold one.
pub async fn measure(cache: &Path) -> PythonGuestReport {
    eprintln!("measuring the Python guest ...");
    let cache_dir = cache.display().to_string();
    let args = ["--cache-dir", cache_dir.as_str()];
    let plugins = Workspace::with_components(&["echo-py-sync", "faulty-py-sync"]);
    let component_bytes = std::fs::metadata(plugins.path().join("echo-py-sync.wasm"))
        .map(|m| m.len())
        .unwrap_or(0);

    let name = crate::PYTHON_ECHO;
    let echo_only = Workspace::with_components(&["echo-py-sync"]);
    let cold_start = servers::flyte_connect(name, "echo_py", echo_only.path(), &args)
        .await
        .ready_after;
    let warm_start = servers::flyte_connect(name, "echo_py", echo_only.path(), &args)
        .await
        .ready_after;

    let dir = plugins.path().display().to_string();
    let start = || {
        Server::start_with_env(
            &["--plugin-dir", &dir, "--cache-dir", &cache_dir],
            plugins.path(),
            &[("RUST_LOG", "flyte_connect=debug")],
        )
    };
    // This first server compiles faulty-py-sync.wasm; the second loads it.
    let compiling = start();
    let rss_after_compile = {
        let mut tasks = compiling.tasks().await;
        tasks
            .create_task(sleep_request("0"))
            .await
            .expect("a first sleep call");
        Rss::of(compiling.pid())
    };
    drop(compiling);
    let server = start();
    load::run(server.grpc_addr, "echo_py", 1, Duration::from_secs(2)).await;
    let log = server.output.text();
    let mut parts = Vec::new();
    for function in ["create", "get", "delete"] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("guest call")
                    && l.contains("connector=Echo Connector (Python)")
                    && l.contains(&format!("function=\"{function}\""))
            })
            .collect();
        let part = |key| median(lines.iter().filter_map(|l| field(l, key)).collect());
        parts.push((
            function.to_owned(),
            [part("instantiate_us"), part("call_us"), part("release_us")],
        ));
    }

    let mut tasks = server.tasks().await;
    tasks
        .create_task(sleep_request("0"))
        .await
        .expect("a first sleep call");
    let rss_idle = Rss::of(server.pid());
    let mut calls = Vec::new();
    for _ in 0..IN_FLIGHT {
        let mut client = tasks.clone();
        calls.push(tokio::spawn(async move {
            client.create_task(sleep_request("1")).await.map(|_| ())
        }));
    }
    let mut rss_in_flight = rss_idle;
    let until = Instant::now() + Duration::from_millis(900);
    while Instant::now() < until {
        rss_in_flight = rss_in_flight.max(Rss::of(server.pid()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for call in calls {
        call.await
            .expect("a sleeping call's task")
            .expect("a sleeping call");
    }
    PythonGuestReport {
        component_bytes,
        cold_start,
        warm_start,
        parts,
        rss_after_compile,
        rss_idle,
        rss_in_flight,
    }
}

pub fn report(r: &PythonGuestReport) {
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    println!();
    println!(
        "Python guest (`echo-py-sync.wasm`, {:.1} MB): first start, compiling it: {}; \
         start from the compile cache: {}",
        r.component_bytes as f64 / 1e6,
        ms(r.cold_start),
        ms(r.warm_start)
    );
    println!();
    println!("| call | instantiate | call | release |\n| --- | ---: | ---: | ---: |");
    for (function, [instantiate, call, release]) in &r.parts {
        println!("| {function} | {instantiate} µs | {call} µs | {release} µs |");
    }
    let per_call = |f: fn(&Rss) -> u64| {
        mib(f(&r.rss_in_flight).saturating_sub(f(&r.rss_idle))) / IN_FLIGHT as f64
    };
    println!();
    println!(
        "| server (echo-py-sync + faulty-py-sync) | RSS | of it private |\n| --- | ---: | ---: |"
    );
    for (what, rss) in [
        (
            "at rest, having compiled faulty-py-sync",
            r.rss_after_compile,
        ),
        ("at rest, loaded from the compile cache", r.rss_idle),
        (
            "64 calls in flight (each awaiting asyncio.sleep)",
            r.rss_in_flight,
        ),
    ] {
        println!(
            "| {what} | {:.1} MiB | {:.1} MiB |",
            mib(rss.total),
            mib(rss.anon)
        );
    }
    println!(
        "| per call in flight | {:.2} MiB | {:.2} MiB |",
        per_call(|r| r.total),
        per_call(|r| r.anon)
    );
}
