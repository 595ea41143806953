//! Instance reuse (`instance_reuse = "connection"`): a finished call's
//! instance may serve later calls with the same connection map, and no
//! other; without the manifest key every call is fresh. Each test runs for
//! the Rust component and the Python one of each world (see
//! `faulty_guests`).

use flyte_connect::proto::connector::CreateTaskRequest;
use flyte_connect_e2e::{Server, eventually, metric_value};

use crate::faulty_guests::{
    Guest, REUSE, WITHIN, guest_tests, idle, instances, parse_tally, tally, tally_at_once, tenant,
};

async fn fresh_by_default(guest: Guest) {
    let (_plugins, server) = guest.serve("", &[]);
    let a = tenant("a", &[]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let seen = tally(&server, guest, &a, 0, 0).await;
        assert_eq!((seen.calls, seen.seen.len()), (1, 0), "{seen:?}");
        ids.push(seen.instance);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three calls, three instances: {ids:?}");
    assert_eq!(instances(&server, guest, "fresh"), 3.0);
    assert_eq!(instances(&server, guest, "reused"), 0.0);
    assert_eq!(idle(&server), 0.0);
}
guest_tests!(
    fresh_by_default:
    rust_calls_are_fresh_by_default => Rust,
    python_calls_are_fresh_by_default => Python,
    python_sync_calls_are_fresh_by_default => PythonSync,
);

async fn reuse_within_a_tenant_only(guest: Guest) {
    let (_plugins, server) = guest.serve(REUSE, &[]);
    let (a, b) = (tenant("a", &[]), tenant("b", &[]));
    let first = tally(&server, guest, &a, 0, 0).await;
    let second = tally(&server, guest, &a, 0, 0).await;
    assert_eq!(
        second.instance, first.instance,
        "one tenant's calls share an instance"
    );
    assert_eq!(second.calls, 2);
    // Alternating tenants: each sees only itself.
    for round in 0..2 {
        for (connection, name) in [(&b, "b"), (&a, "a")] {
            let seen = tally(&server, guest, connection, 0, 0).await;
            assert!(
                seen.seen.iter().all(|t| t == name),
                "round {round}: tenant {name} saw {:?}",
                seen.seen
            );
        }
    }
    // A map that differs only in a config value is another tenant.
    let eu = tenant("c", &[("region", "eu")]);
    let us = tenant("c", &[("region", "us")]);
    let in_eu = tally(&server, guest, &eu, 0, 0).await;
    let in_us = tally(&server, guest, &us, 0, 0).await;
    assert_eq!((in_us.calls, in_us.seen.len()), (1, 0), "{in_us:?}");
    assert_ne!(in_us.instance, in_eu.instance);
    assert_eq!(
        tally(&server, guest, &eu, 0, 0).await.instance,
        in_eu.instance
    );
    assert!(instances(&server, guest, "reused") >= 5.0);
}
guest_tests!(
    reuse_within_a_tenant_only:
    rust_reuse_stays_within_a_tenant => Rust,
    python_reuse_stays_within_a_tenant => Python,
    python_sync_reuse_stays_within_a_tenant => PythonSync,
);

async fn concurrent_tenants_never_share(guest: Guest) {
    let (_plugins, server) = guest.serve(REUSE, &[]);
    for _round in 0..3 {
        let tenants = ["a", "b", "a", "b", "a", "b"];
        for (name, seen) in tally_at_once(&server, guest, &tenants, 100).await {
            assert!(
                seen.seen.iter().all(|t| t == name),
                "tenant {name} saw {:?}\nthe server printed:\n{}",
                seen.seen,
                server.output.text()
            );
        }
    }
    assert!(instances(&server, guest, "reused") > 0.0);
}
guest_tests!(
    concurrent_tenants_never_share:
    rust_concurrent_tenants_never_share => Rust,
    python_concurrent_tenants_never_share => Python,
    python_sync_concurrent_tenants_never_share => PythonSync,
);

/// After `fail` (a call of tenant `a` that must fail), `a`'s next call runs
/// in a new instance.
async fn assert_dropped_after(server: &Server, guest: Guest, fail: CreateTaskRequest, what: &str) {
    let a = tenant("a", &[]);
    let before = tally(server, guest, &a, 0, 0).await;
    let failed = server.tasks().await.create_task(fail).await;
    assert!(failed.is_err(), "{what}: the call succeeded");
    let after = tally(server, guest, &a, 0, 0).await;
    assert_ne!(
        after.instance, before.instance,
        "{what}: the instance was handed out again"
    );
    assert_eq!(after.calls, 1, "{what}: {after:?}");
}

async fn failed_instances_are_dropped(guest: Guest) {
    let manifest = format!("{REUSE}timeout_seconds = 1\nmemory_mb = 128\n");
    let (_plugins, server) = guest.serve(&manifest, &[]);
    let a = tenant("a", &[]);
    assert_dropped_after(&server, guest, guest.runaway(&a), "past its deadline").await;
    assert_dropped_after(&server, guest, guest.hoard(&a), "over its memory cap").await;
    if let Guest::Rust = guest {
        let panic = guest.create("panic", "", Vec::new(), &a);
        assert_dropped_after(&server, guest, panic, "trapped").await;
    }
    // The cap holds over an instance's life: what each call keeps adds up
    // until a call fails, and the tenant's next call starts afresh.
    let mut served = 0;
    let failed_after = loop {
        let request = guest.tally_request(&a, 8 * 1024, 0);
        match server.tasks().await.create_task(request).await {
            Ok(response) => {
                served = parse_tally(&response.into_inner().resource_meta).calls;
                assert!(served < 64, "128 MiB held {served} times 8 MiB");
            }
            Err(status) => break status,
        }
    };
    assert!(
        failed_after.message().contains("crashed"),
        "{failed_after:?}"
    );
    assert!(
        served > 1,
        "the instance served {served} calls before the cap"
    );
    assert_eq!(tally(&server, guest, &a, 0, 0).await.calls, 1);
}
guest_tests!(
    failed_instances_are_dropped:
    rust_failed_instances_are_dropped => Rust,
    python_failed_instances_are_dropped => Python,
    python_sync_failed_instances_are_dropped => PythonSync,
);

async fn reload_starts_fresh(guest: Guest) {
    let (plugins, server) = guest.serve(REUSE, &[]);
    let a = tenant("a", &[]);
    tally(&server, guest, &a, 0, 0).await;
    assert_eq!(tally(&server, guest, &a, 0, 0).await.calls, 2);
    let name = guest.component();
    plugins.add_variant(name, &format!("{name}.wasm"), "rebuilt");
    eventually(WITHIN, "the replacement is served", || async {
        metric_value(
            &server.metrics_text(),
            "flyte_connector_reloads_total",
            &[("outcome", "replaced")],
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(tally(&server, guest, &a, 0, 0).await.calls, 1);
}
guest_tests!(
    reload_starts_fresh:
    rust_reload_starts_fresh => Rust,
    python_reload_starts_fresh => Python,
    python_sync_reload_starts_fresh => PythonSync,
);

/// `--max-instance-reuse-count` bounds the calls an instance serves (in
/// the async world, that many per call it may serve at once: one here).
async fn reuse_is_bounded(guest: Guest) {
    let (_plugins, server) = guest.serve(
        &format!("{REUSE}max_concurrent_calls = 1\n"),
        &[
            "--max-instance-reuse-count",
            "3",
            "--idle-instance-timeout",
            "0.5",
            "--max-idle-instances",
            "1",
        ],
    );
    let a = tenant("a", &[]);
    let mut counts = Vec::new();
    for _ in 0..7 {
        counts.push(tally(&server, guest, &a, 0, 0).await.calls);
    }
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1]);
    // At most one idle instance, whatever ran at once.
    tally_at_once(&server, guest, &["a"; 4], 100).await;
    assert_eq!(idle(&server), 1.0);
    // The idle timeout releases it.
    eventually(WITHIN, "the idle instance is released", || async {
        idle(&server) == 0.0
    })
    .await;
    assert_eq!(tally(&server, guest, &a, 0, 0).await.calls, 1);
}
guest_tests!(
    reuse_is_bounded:
    rust_reuse_is_bounded => Rust,
    python_reuse_is_bounded => Python,
    python_sync_reuse_is_bounded => PythonSync,
);

/// By default a component keeps as many idle instances as it just had
/// calls in flight, more than the floor of twice the workers, so a steady
/// load of waiting calls finds an instance for each call — each its own in
/// the sync world; in the async world the eight share one.
async fn idle_instances_follow_the_calls_in_flight(guest: Guest) {
    let (_plugins, server) =
        guest.serve(REUSE, &["--worker", "1", "--idle-instance-timeout", "30"]);
    let tenants = ["a"; 8];
    let instances_needed = if guest.concurrent() { 1.0 } else { 8.0 };
    tally_at_once(&server, guest, &tenants, 500).await;
    assert_eq!(
        idle(&server),
        instances_needed,
        "eight calls ran at once, above the floor of two"
    );
    // Eight at once again: each finds an instance, none starts afresh.
    let again = tally_at_once(&server, guest, &tenants, 300).await;
    assert!(again.iter().all(|(_, tally)| tally.calls >= 2), "{again:?}");
    assert_eq!(instances(&server, guest, "fresh"), instances_needed);
    assert_eq!(instances(&server, guest, "reused"), 16.0 - instances_needed);
}
guest_tests!(
    idle_instances_follow_the_calls_in_flight:
    rust_idle_instances_follow_the_calls_in_flight => Rust,
    python_idle_instances_follow_the_calls_in_flight => Python,
    python_sync_idle_instances_follow_the_calls_in_flight => PythonSync,
);

#[tokio::test]
async fn an_unknown_reuse_mode_keeps_the_plugin_out() {
    let (_plugins, server) = Guest::Rust.serve("instance_reuse = \"sometimes\"\n", &[]);
    eventually(WITHIN, "the manifest is refused", || async {
        server
            .output
            .text()
            .contains(r#"instance_reuse = "sometimes": expected "never" or "connection""#)
    })
    .await;
    assert!(server.connector_names().await.is_empty());
}
