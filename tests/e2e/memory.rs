//! The memory budget: however many memory-hungry calls arrive at once, each
//! succeeds or fails alone (RESOURCE_EXHAUSTED, naming the budget), the
//! server's memory stays within the budget and its own overhead, and the
//! server lives on, also in a memory cgroup where going past the limit
//! would get it OOM-killed.

use std::time::Duration;

use flyte_connect::proto::core::SimpleType;
use flyte_connect_e2e::{
    Server, Workspace,
    isolation::{MemoryCgroup, Wrapper},
    literals::{self, TypedInputs, int, simple},
    metric_value, status_kib,
};
use tonic::Code;

const MIB: u64 = 1 << 20;

/// A `touch` task: `mib` MiB written, held for `ms`.
fn touch(mib: i64, ms: i64) -> flyte_connect::proto::connector::CreateTaskRequest {
    literals::create_request(
        "touch",
        &TypedInputs(vec![
            ("mib", int(mib), simple(SimpleType::Integer)),
            ("ms", int(ms), simple(SimpleType::Integer)),
        ]),
    )
}

/// Runs `calls` `touch` calls of `mib` MiB at once; how many succeeded. Every
/// failure must be the budget's RESOURCE_EXHAUSTED.
async fn burst(server: &Server, calls: usize, mib: i64, ms: i64) -> usize {
    let mut running = Vec::new();
    for _ in 0..calls {
        let mut tasks = server.tasks().await;
        running.push(tokio::spawn(async move {
            tasks.create_task(touch(mib, ms)).await
        }));
    }
    let mut succeeded = 0;
    for call in running {
        match call.await.expect("join") {
            Ok(_) => succeeded += 1,
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::ResourceExhausted,
                    "{}",
                    status.message()
                );
                assert!(
                    status.message().contains("--memory-budget"),
                    "{}",
                    status.message()
                );
            }
        }
    }
    succeeded
}

fn serve(flags: &[&str]) -> (Workspace, Server) {
    let plugins = Workspace::with_components(&["faulty"]);
    let dir = plugins.path().display().to_string();
    let mut args = vec!["--plugin-dir", dir.as_str()];
    args.extend_from_slice(flags);
    let server = Server::start(&args, plugins.path());
    (plugins, server)
}

fn gauge(server: &Server, name: &str) -> f64 {
    metric_value(&server.metrics_text(), name, &[]).unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_or_fail_alone_under_a_budget_far_below_calls_times_cap() {
    // 16 calls that may each grow to 256 MiB (the default cap): 4 GiB,
    // under a budget of 160 MiB.
    let (_plugins, server) = serve(&["--memory-budget", "160MiB"]);
    assert_eq!(
        gauge(&server, "flyte_connector_memory_budget_bytes"),
        (160 * MIB) as f64
    );
    let rested = status_kib(server.pid(), "VmRSS").expect("the server's RSS");
    let succeeded = burst(&server, 16, 64, 200).await;
    assert!(succeeded >= 2, "only {succeeded} of 16 calls succeeded");
    // The server held no more than the budget past what it held at rest
    // (plus 32 MiB: pool slots keep 2 MiB each resident after a reset).
    let peak = status_kib(server.pid(), "VmHWM").expect("the server's peak RSS");
    eprintln!(
        "16 calls of 64 MiB under a 160 MiB budget: {succeeded} succeeded; RSS {} MiB at rest, \
         peak {} MiB",
        rested / 1024,
        peak / 1024
    );
    assert!(
        peak.saturating_sub(rested) <= 160 * 1024 + 32 * 1024,
        "peak {peak} KiB, {rested} KiB at rest"
    );
    // Once the burst is over, calls are served as before, and the budget
    // is free again.
    assert_eq!(burst(&server, 2, 8, 0).await, 2);
    assert_eq!(
        gauge(&server, "flyte_connector_memory_budget_used_bytes"),
        0.0
    );

    // A call that could never fit fails alone, saying so, at once.
    let status = server
        .tasks()
        .await
        .create_task(touch(150, 0))
        .await
        .expect_err("more than the budget");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("more than the server's memory budget lets one call hold"),
        "{}",
        status.message()
    );
    assert_eq!(burst(&server, 1, 8, 0).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_memory_cgroup_the_default_budget_keeps_the_server_alive() {
    const LIMIT: u64 = 384 * MIB;
    let name = format!("flyte-connect-test-{}", std::process::id());
    let Some(cgroup) = MemoryCgroup::create(&name, LIMIT) else {
        panic!("cannot make a memory cgroup here (make test runs as root)");
    };
    let plugins = Workspace::with_components(&["faulty"]);
    let dir = plugins.path().display().to_string();
    let mut server = Server::start_wrapped(
        &Wrapper::in_cgroup(&cgroup),
        &flyte_connect_e2e::binary(),
        0,
        &["--plugin-dir", &dir],
        plugins.path(),
        &[],
    );
    // No flag: the budget is the default share of the cgroup's limit.
    let budget = gauge(&server, "flyte_connector_memory_budget_bytes");
    assert_eq!(budget, (LIMIT / 100 * 60) as f64);
    let output = server.output.text();
    assert!(output.contains("60% of 384 MiB"), "{output}");

    // Sixteen calls touching 100 MiB each: 1.6 GB, in 384 MiB.
    let succeeded = burst(&server, 16, 100, 300).await;
    assert!(succeeded >= 1, "none of 16 calls succeeded");
    assert_eq!(cgroup.oom_kills(), 0, "the OOM killer struck");
    assert!(
        !server.has_exited(),
        "the server died:\n{}",
        server.output.text()
    );
    let peak = status_kib(server.pid(), "VmHWM").expect("the server's peak RSS") * 1024;
    eprintln!(
        "16 calls of 100 MiB in a 384 MiB cgroup: {succeeded} succeeded; budget {} MiB, peak \
         RSS {} MiB",
        budget as u64 / MIB,
        peak / MIB
    );
    assert!(
        peak <= budget as u64 + 96 * MIB,
        "peak {} MiB over a budget of {} MiB",
        peak / MIB,
        budget as u64 / MIB
    );
    assert_eq!(burst(&server, 2, 8, 0).await, 2);
    let stopped = server.terminate();
    assert!(stopped.success(), "{stopped}");
    // Give the cgroup a moment to see its process gone before removal.
    tokio::time::sleep(Duration::from_millis(100)).await;
}
