//! `make bench`: what a connector call costs, as ratios against baselines
//! measured in the same run, so the numbers mean the same on any machine.
//!
//! - latency: an echo CreateTask+GetTask round trip (two wasm instances,
//!   literal conversion both ways) against a gRPC health check on the same
//!   channel (the cost of the transport alone);
//! - throughput: the same, with many clients at once;
//! - memory: the server's resident set after many calls against right after
//!   start (fresh instances per call should leave nothing behind).

use std::time::{Duration, Instant};

use flyte_connect::proto::{connector::GetTaskRequest, core::SimpleType};
use flyte_connect_e2e::{
    Server, Workspace,
    literals::{
        self, TypedInputs, category, float, int, list, list_of, map, map_of, simple, string,
    },
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const SEQUENTIAL_CALLS: usize = 300;
const CLIENTS: usize = 16;
const CALLS_PER_CLIENT: usize = 50;

fn inputs() -> TypedInputs {
    TypedInputs(vec![
        ("n", int(7), simple(SimpleType::Integer)),
        ("x", float(0.25), simple(SimpleType::Float)),
        ("s", string("benchmark"), simple(SimpleType::String)),
        (
            "ids",
            list((0..32).map(int).collect()),
            list_of(simple(SimpleType::Integer)),
        ),
        (
            "w",
            map(vec![("a", float(1.0)), ("b", float(2.0))]),
            map_of(simple(SimpleType::Float)),
        ),
    ])
}

async fn health_check(server: &Server) -> Duration {
    let mut health = HealthClient::new(server.channel().await);
    let started = Instant::now();
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check");
    started.elapsed()
}

async fn echo_round_trip(server: &Server, inputs: &TypedInputs) -> Duration {
    let mut tasks = server.tasks().await;
    let started = Instant::now();
    let meta = tasks
        .create_task(literals::create_request("echo", inputs))
        .await
        .expect("CreateTask")
        .into_inner()
        .resource_meta;
    tasks
        .get_task(GetTaskRequest {
            resource_meta: meta,
            task_category: category("echo"),
            ..Default::default()
        })
        .await
        .expect("GetTask");
    started.elapsed()
}

/// Median of `n` sequential runs of `call` (the channel is set up outside the timing).
async fn median<F, Fut>(n: usize, mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Duration>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(call().await);
    }
    samples.sort();
    samples[n / 2]
}

/// Calls per second with `CLIENTS` clients each making `CALLS_PER_CLIENT` calls.
async fn throughput(server: &Server, echo: bool) -> f64 {
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let channel = server.channel().await;
        let inputs = inputs();
        clients.push(tokio::spawn(async move {
            let mut tasks =
                flyte_connect::proto::connector::async_connector_service_client::AsyncConnectorServiceClient::new(
                    channel.clone(),
                );
            let mut health = HealthClient::new(channel);
            for _ in 0..CALLS_PER_CLIENT {
                if echo {
                    tasks
                        .create_task(literals::create_request("echo", &inputs))
                        .await
                        .expect("CreateTask");
                } else {
                    health
                        .check(HealthCheckRequest { service: String::new() })
                        .await
                        .expect("health");
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    (CLIENTS * CALLS_PER_CLIENT) as f64 / started.elapsed().as_secs_f64()
}

fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() {
    let plugins = Workspace::with_components(&["echo"]);
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    let inputs = inputs();
    // Warm up both paths (connections, caches).
    for _ in 0..20 {
        health_check(&server).await;
        echo_round_trip(&server, &inputs).await;
    }
    let rss_start = resident_kib(server.pid());

    let health = median(SEQUENTIAL_CALLS, || health_check(&server)).await;
    let echo = median(SEQUENTIAL_CALLS, || echo_round_trip(&server, &inputs)).await;
    let health_rate = throughput(&server, false).await;
    let echo_rate = throughput(&server, true).await;
    let rss_end = resident_kib(server.pid());

    println!("flyte-connect benchmark (ratios against baselines measured in this run)");
    println!("  latency, median of {SEQUENTIAL_CALLS}:");
    println!(
        "    gRPC health check (baseline)          {:>10.1} µs",
        health.as_secs_f64() * 1e6
    );
    println!(
        "    echo CreateTask+GetTask               {:>10.1} µs   = {:.1}x baseline",
        echo.as_secs_f64() * 1e6,
        echo.as_secs_f64() / health.as_secs_f64()
    );
    println!("  throughput, {CLIENTS} clients x {CALLS_PER_CLIENT} calls:");
    println!("    health checks (baseline)              {health_rate:>10.0} /s");
    println!(
        "    echo CreateTask                       {echo_rate:>10.0} /s   = {:.2}x baseline",
        echo_rate / health_rate
    );
    if let (Some(start), Some(end)) = (rss_start, rss_end) {
        println!("  memory (server RSS):");
        println!(
            "    after warm-up                         {:>10} KiB",
            start
        );
        println!(
            "    after {} more calls                  {:>10} KiB   = {:.2}x",
            2 * SEQUENTIAL_CALLS + 2 * CLIENTS * CALLS_PER_CLIENT,
            end,
            end as f64 / start as f64
        );
    }
}
