//! Calls beyond the call slots wait their turn: none is refused while the
//! wait queue has room, a full queue answers RESOURCE_EXHAUSTED, and a
//! client's deadline passing in the queue answers DEADLINE_EXCEEDED.

use std::time::Duration;

use flyte_connect::proto::{
    connector::{CreateTaskRequest, CreateTaskResponse},
    core::SimpleType,
};
use flyte_connect_e2e::{
    Server, Workspace, eventually,
    literals::{self, TypedInputs, int, simple},
    metric_value,
};
use tokio::task::JoinHandle;
use tonic::Code;

fn start(extra: &[&str]) -> (Workspace, Server) {
    let plugins = Workspace::with_components(&["faulty"]);
    let dir = plugins.path().display().to_string();
    let mut args = vec!["--plugin-dir", dir.as_str()];
    args.extend_from_slice(extra);
    let server = Server::start(&args, plugins.path());
    (plugins, server)
}

/// A `slow` task that holds its slot for `ms` milliseconds.
fn slow(ms: i64) -> CreateTaskRequest {
    literals::create_request(
        "slow",
        &TypedInputs(vec![("ms", int(ms), simple(SimpleType::Integer))]),
    )
}

/// Starts `n` concurrent `slow(ms)` calls, each on its own connection.
async fn slow_calls(server: &Server, n: usize, ms: i64) -> Vec<JoinHandle<Answer>> {
    let mut calls = Vec::new();
    for _ in 0..n {
        let mut client = server.tasks().await;
        calls.push(tokio::spawn(
            async move { client.create_task(slow(ms)).await },
        ));
    }
    calls
}

type Answer = Result<tonic::Response<CreateTaskResponse>, tonic::Status>;

/// Waits for every call, failing on the first that failed.
async fn all_succeed(calls: Vec<JoinHandle<Answer>>, what: &str) {
    for call in calls {
        let answer = call.await.expect("join");
        assert!(answer.is_ok(), "{what}: {answer:?}");
    }
}

/// Failed `slow` creates with this `error_code`.
fn slow_create_failures(server: &Server, code: &str) -> f64 {
    let labels = [
        ("task_type", "slow"),
        ("operation", "create"),
        ("error_code", code),
    ];
    let text = server.metrics_text();
    metric_value(&text, "flyte_connector_requests_failure_total", &labels).unwrap_or(0.0)
}

fn gauge(server: &Server, name: &str) -> f64 {
    metric_value(&server.metrics_text(), name, &[]).unwrap_or(-1.0)
}

#[tokio::test]
async fn more_concurrent_calls_than_slots_all_succeed_in_turn() {
    let (_plugins, server) = start(&["--max-concurrent-calls", "2"]);
    let calls = slow_calls(&server, 8, 300).await;
    // While they run: two in slots, the rest waiting, never more running.
    eventually(Duration::from_secs(10), "calls wait for a slot", || async {
        gauge(&server, "flyte_connector_calls_queued") >= 1.0
    })
    .await;
    assert_eq!(gauge(&server, "flyte_connector_call_slots_in_use"), 2.0);
    assert!(gauge(&server, "flyte_connector_guest_calls_in_flight") <= 2.0);
    all_succeed(calls, "a queued call failed").await;
    let text = server.metrics_text();
    assert_eq!(
        metric_value(
            &text,
            "flyte_connector_requests_success_total",
            &[("task_type", "slow"), ("operation", "create")]
        ),
        Some(8.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_full_queue_is_resource_exhausted() {
    let (_plugins, server) = start(&["--max-concurrent-calls", "1", "--max-queued-calls", "1"]);
    let mut running = server.tasks().await;
    let mut queued = server.tasks().await;
    let running = tokio::spawn(async move { running.create_task(slow(1500)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = tokio::spawn(async move { queued.create_task(slow(10)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let status = server
        .tasks()
        .await
        .create_task(slow(10))
        .await
        .expect_err("no room in the queue");
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status
            .message()
            .contains("all 1 connector call slots are busy")
            && status.message().contains("1 calls are already waiting"),
        "{}",
        status.message()
    );
    assert!(running.await.expect("join").is_ok());
    assert!(
        queued.await.expect("join").is_ok(),
        "the queued call is served"
    );
    assert_eq!(slow_create_failures(&server, "503"), 1.0);
}

#[tokio::test]
async fn a_client_deadline_passing_in_the_queue_is_deadline_exceeded() {
    let (_plugins, server) = start(&["--max-concurrent-calls", "1"]);
    let mut running = server.tasks().await;
    let running = tokio::spawn(async move { running.create_task(slow(1500)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut request = tonic::Request::new(slow(10));
    request.set_timeout(Duration::from_millis(400));
    let status = server
        .tasks()
        .await
        .create_task(request)
        .await
        .expect_err("the slot stays busy past the deadline");
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("deadline passed after waiting"),
        "the server, not the transport, answered: {}",
        status.message()
    );
    assert!(
        !running.is_finished(),
        "the answer came at the client's deadline, not once the slot was free"
    );
    assert!(running.await.expect("join").is_ok());

    // The call that gave up took no slot: the next call is served.
    assert!(server.tasks().await.create_task(slow(10)).await.is_ok());
    assert_eq!(slow_create_failures(&server, "504"), 1.0);
    assert_eq!(gauge(&server, "flyte_connector_calls_queued"), 0.0);
}

#[tokio::test]
async fn running_out_of_pool_instances_waits_like_a_busy_slot() {
    // Each slot holds 2 core instances, fewer than one instance of faulty
    // needs: only some of the 4 slots can run at once, and the rest wait for
    // the pool rather than fail.
    let plugins = Workspace::with_components(&["faulty"]);
    let dir = plugins.path().display().to_string();
    let server = Server::start_with_env(
        &[
            "--plugin-dir",
            &dir,
            "--max-concurrent-calls",
            "4",
            "--pool-core-instances-per-slot",
            "2",
        ],
        plugins.path(),
        &[("RUST_LOG", "info,flyte_connect::runtime=debug")],
    );
    let calls = slow_calls(&server, 4, 300).await;
    all_succeed(calls, "a call failed for want of pool").await;
    assert!(
        server
            .output
            .text()
            .contains("instance pool exhausted, waiting"),
        "the pool never ran out:\n{}",
        server.output.text()
    );
}
