//! Calls at once: a component of the async world serves several calls of
//! one tenant in one instance (up to `max_concurrent_calls`), each with its
//! own deadline, log and cancellation; one of the sync world serves each
//! call in an instance of its own. What the docs promise of both is checked
//! here against the Python faulty component built for each world (see
//! `faulty_guests`); tenants apart and reuse are checked in `reuse`.

use std::time::Duration;

use flyte_connect::proto::{
    connector::CreateTaskRequest,
    core::{Connection, SimpleType},
};
use flyte_connect_e2e::{Server, eventually, literals::string, metric_value};
use tonic::{Code, Status};

use crate::faulty_guests::{
    Guest, REUSE, Tally, WITHIN, guest_tests, instances, parse_tally, tally, tally_at_once, tenant,
};

/// A create of the Python faulty component doing `fault` with `seconds`.
fn fault(guest: Guest, fault: &str, seconds: f64, connection: &Connection) -> CreateTaskRequest {
    guest.create(
        "",
        fault,
        vec![("seconds", string(&seconds.to_string()), SimpleType::String)],
        connection,
    )
}

/// A call in flight, answering in a task of its own.
type InFlight<T> = tokio::task::JoinHandle<Result<T, Status>>;

/// Sends `request` from a task of its own, so that calls overlap.
async fn send(server: &Server, request: CreateTaskRequest) -> InFlight<Tally> {
    let mut client = server.tasks().await;
    tokio::spawn(async move {
        let response = client.create_task(request).await?;
        Ok(parse_tally(&response.into_inner().resource_meta))
    })
}

/// Sends `request` with a client deadline of `timeout`.
async fn send_within(
    server: &Server,
    request: CreateTaskRequest,
    timeout: Duration,
) -> InFlight<()> {
    let mut client = server.tasks().await;
    tokio::spawn(async move {
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        client.create_task(request).await.map(|_| ())
    })
}

/// Sends each of `requests` at once.
async fn send_all(
    server: &Server,
    requests: impl IntoIterator<Item = CreateTaskRequest>,
) -> Vec<InFlight<Tally>> {
    let mut calls = Vec::new();
    for request in requests {
        calls.push(send(server, request).await);
    }
    calls
}

async fn one_tenants_calls_at_once(guest: Guest) {
    let (_plugins, server) = guest.serve(REUSE, &[]);
    let answers = tally_at_once(&server, guest, &["a"; 12], 600).await;
    let mut ids: Vec<&str> = answers.iter().map(|(_, t)| t.instance.as_str()).collect();
    ids.sort();
    ids.dedup();
    let most = answers.iter().map(|(_, t)| t.most).max().unwrap_or(0);
    if guest.concurrent() {
        assert_eq!(
            ids.len(),
            1,
            "twelve calls of one tenant, one instance: {answers:?}"
        );
        assert!(
            most > 1,
            "the calls overlapped in the instance: {answers:?}"
        );
        assert_eq!(instances(&server, guest, "fresh"), 1.0);
    } else {
        assert_eq!(ids.len(), 12, "twelve calls, twelve instances: {answers:?}");
        assert_eq!(most, 1, "never two calls in one instance: {answers:?}");
    }
}
guest_tests!(
    one_tenants_calls_at_once:
    async_world_calls_of_one_tenant_share_an_instance_at_once => Python,
    sync_world_calls_at_once_each_have_an_instance => PythonSync,
);

#[tokio::test]
async fn max_concurrent_calls_bounds_the_calls_of_one_instance() {
    let guest = Guest::Python;
    let (_plugins, server) = guest.serve(&format!("{REUSE}max_concurrent_calls = 4\n"), &[]);
    let answers = tally_at_once(&server, guest, &["a"; 12], 600).await;
    let mut ids: Vec<&str> = answers.iter().map(|(_, t)| t.instance.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert!(
        ids.len() >= 3,
        "twelve calls, at most four per instance: {answers:?}"
    );
    assert!(
        answers.iter().all(|(_, t)| t.most <= 4),
        "no instance had more than four at once: {answers:?}"
    );
}

#[tokio::test]
async fn an_out_of_range_concurrency_keeps_the_plugin_out() {
    let (_plugins, server) =
        Guest::Python.serve(&format!("{REUSE}max_concurrent_calls = 0\n"), &[]);
    eventually(WITHIN, "the manifest is refused", || async {
        server
            .output
            .text()
            .contains("max_concurrent_calls = 0: expected 1 to 1024")
    })
    .await;
    assert!(server.connector_names().await.is_empty());
}

/// A call past its deadline fails as such, and is cancelled in the guest:
/// its wait raises there and its `finally` runs, while the calls beside it
/// answer and the instance serves on.
async fn a_call_past_its_deadline_is_cancelled(guest: Guest) {
    let (_plugins, server) = guest.serve(&format!("{REUSE}timeout_seconds = 2\n"), &[]);
    let a = tenant("a", &[]);
    let first = tally(&server, guest, &a, 0, 0).await;
    let hang = send(&server, fault(guest, "hang", 0.0, &a)).await;
    let beside = send_all(&server, (0..3).map(|_| fault(guest, "tally", 0.3, &a))).await;
    // All in before the hanging call is given up (none joins after, until
    // it has unwound).
    in_flight(&server, 4).await;
    let hung = hang.await.expect("the call's task").expect_err("it hangs");
    assert_eq!(hung.code(), Code::DeadlineExceeded, "{hung:?}");
    for call in beside {
        let tally = call.await.expect("the call's task").expect("it answers");
        if guest.concurrent() {
            assert_eq!(tally.instance, first.instance, "{tally:?}");
        }
    }
    if guest.concurrent() {
        eventually(WITHIN, "the hung call unwound in the guest", || async {
            let seen = tally(&server, guest, &a, 0, 0).await;
            seen.instance == first.instance && seen.unwound == 1
        })
        .await;
    } else {
        // Its instance was dropped with the call: the next is fresh.
        assert_eq!(tally(&server, guest, &a, 0, 0).await.unwound, 0);
    }
}
guest_tests!(
    a_call_past_its_deadline_is_cancelled:
    async_world_a_call_past_its_deadline_is_cancelled_in_the_guest => Python,
    sync_world_a_call_past_its_deadline_drops_its_instance => PythonSync,
);

/// A client that gives up (its own deadline, then dropping the call) gets
/// its call cancelled in the guest as well.
#[tokio::test]
async fn a_client_that_leaves_cancels_its_call_in_the_guest() {
    let guest = Guest::Python;
    let (_plugins, server) = guest.serve(REUSE, &[]);
    let a = tenant("a", &[]);
    let first = tally(&server, guest, &a, 0, 0).await;
    // Beside a long call, so the instance stays driven meanwhile; both
    // hanging calls are in it before either is given up (a call given up
    // keeps others from joining until it has unwound).
    let holder = send(&server, fault(guest, "tally", 6.0, &a)).await;
    in_flight(&server, 1).await;
    let left = send_within(
        &server,
        fault(guest, "hang", 0.0, &a),
        Duration::from_secs(3),
    )
    .await;
    // One whose client drops it without a deadline.
    let dropped = send(&server, fault(guest, "hang", 0.0, &a)).await;
    in_flight(&server, 3).await;
    dropped.abort();
    let left = left
        .await
        .expect("the call's task")
        .expect_err("the client gave up");
    // The client's own timer may answer first (tonic: CANCELLED).
    assert!(
        matches!(left.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{left:?}"
    );
    let held = holder.await.expect("the call's task").expect("it answers");
    assert_eq!(held.instance, first.instance);
    eventually(WITHIN, "both calls unwound in the guest", || async {
        tally(&server, guest, &a, 0, 0).await.unwound == 2
    })
    .await;
}

/// Waits until `calls` calls are running in the server's instances.
async fn in_flight(server: &Server, calls: usize) {
    eventually(WITHIN, &format!("{calls} calls in flight"), || async {
        metric_value(
            &server.metrics_text(),
            "flyte_connector_guest_calls_in_flight",
            &[],
        ) == Some(calls as f64)
    })
    .await;
}

/// A trap fails every call then in its instance, each with its own last
/// lines, and the instance is dropped; in the sync world it fails only its
/// own call.
async fn a_trap_among_calls(guest: Guest) {
    let (_plugins, server) = guest.serve(REUSE, &[]);
    let a = tenant("a", &[]);
    let first = tally(&server, guest, &a, 0, 0).await;
    let beside = send_all(&server, (0..3).map(|_| fault(guest, "tally", 1.5, &a))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let aborted = send(&server, fault(guest, "abort", 0.1, &a))
        .await
        .await
        .expect("the call's task")
        .expect_err("it aborts");
    assert_eq!(aborted.code(), Code::Internal, "{aborted:?}");
    assert!(
        aborted.message().contains("crashed") && aborted.message().contains("aborting now"),
        "the trap, with what the aborting call printed: {aborted:?}"
    );
    for call in beside {
        let outcome = call.await.expect("the call's task");
        if guest.concurrent() {
            let failed = outcome.expect_err("its instance trapped");
            assert_eq!(failed.code(), Code::Internal, "{failed:?}");
            assert!(
                failed.message().contains("crashed") && !failed.message().contains("aborting now"),
                "the trap, without another call's lines: {failed:?}"
            );
        } else {
            outcome.expect("an instance of its own");
        }
    }
    let after = tally(&server, guest, &a, 0, 0).await;
    if guest.concurrent() {
        assert_ne!(
            after.instance, first.instance,
            "the trapped instance was dropped"
        );
    }
}
guest_tests!(
    a_trap_among_calls:
    async_world_a_trap_fails_every_call_in_its_instance => Python,
    sync_world_a_trap_fails_only_its_call => PythonSync,
);

/// Serves the Python component of the async world; while a tally of
/// `beside` seconds is in its instance, sends the request `culprit` makes
/// with a client deadline of a second, and checks that the culprit fails
/// for its deadline, that the tally fails with `why` (its instance was
/// stopped), and that the tenant's next call has a new instance.
async fn stops_its_instance(
    culprit: impl FnOnce(&Connection) -> CreateTaskRequest,
    beside: f64,
    why: &str,
) {
    let guest = Guest::Python;
    let (_plugins, server) = guest.serve(&format!("{REUSE}timeout_seconds = 30\n"), &[]);
    let a = tenant("a", &[]);
    let first = tally(&server, guest, &a, 0, 0).await;
    let beside = send(&server, fault(guest, "tally", beside, &a)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failed = send_within(&server, culprit(&a), Duration::from_secs(1))
        .await
        .await
        .expect("the call's task")
        .expect_err("it never answers");
    assert!(
        matches!(failed.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{failed:?}"
    );
    let stopped = beside
        .await
        .expect("the call's task")
        .expect_err("its instance was stopped");
    assert_eq!(stopped.code(), Code::Internal, "{stopped:?}");
    assert!(stopped.message().contains(why), "{stopped:?}");
    assert_ne!(
        tally(&server, guest, &a, 0, 0).await.instance,
        first.instance
    );
}

/// Guest code that never waits holds its instance: the epoch deadline
/// stops it at its call's deadline, and the calls beside it learn why.
#[tokio::test]
async fn a_call_that_never_waits_is_stopped_at_its_deadline() {
    stops_its_instance(
        |a| Guest::Python.runaway(a),
        0.5,
        "another call in its instance ran past its deadline",
    )
    .await;
}

/// A call given up that never unwinds (it waits on nothing the host ends)
/// would keep its instance from other calls for good: the instance is
/// stopped once it has not unwound for a while.
#[tokio::test]
async fn a_call_that_never_unwinds_stops_its_instance() {
    stops_its_instance(
        |a| fault(Guest::Python, "stuck", 0.0, a),
        20.0,
        "did not unwind",
    )
    .await;
}
