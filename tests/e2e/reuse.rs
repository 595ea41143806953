//! Instance reuse (`instance_reuse = "connection"`): a finished call's
//! instance may serve later calls with the same connection map, and no
//! other; without the manifest key every call is fresh. Each test runs for
//! a Rust and a Python component that remember what they saw (the faulty
//! components' `tally`: an instance id, the calls it served, the tenants of
//! the earlier ones).

use std::time::Duration;

use flyte_connect::proto::{
    connector::CreateTaskRequest,
    core::{Connection, SimpleType},
};
use flyte_connect_e2e::{
    Server, Workspace, eventually,
    literals::{self, TypedInputs, int, simple, string},
    metric_value,
};
use serde_json::Value;

/// How long a change may take to show on a slow CI machine.
const WITHIN: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug)]
enum Guest {
    Rust,
    Python,
}

/// What one `tally` call reported of its instance.
#[derive(Debug)]
struct Tally {
    instance: String,
    calls: u64,
    seen: Vec<String>,
}

impl Guest {
    fn component(self) -> &'static str {
        match self {
            Self::Rust => "faulty",
            Self::Python => "faulty-py",
        }
    }

    fn connector(self) -> &'static str {
        match self {
            Self::Rust => "Faulty Connector",
            Self::Python => "Faulty Connector (Python)",
        }
    }

    /// Serves the component with `manifest` and the server flags `extra`.
    fn serve(self, manifest: &str, extra: &[&str]) -> (Workspace, Server) {
        let plugins = Workspace::new();
        let name = self.component();
        plugins.add_component(name, &format!("{name}.wasm"));
        plugins.write(&format!("{name}.toml"), manifest.as_bytes());
        let dir = plugins.path().display().to_string();
        let mut args = vec!["--plugin-dir", dir.as_str()];
        args.extend_from_slice(extra);
        let server = Server::start(&args, plugins.path());
        (plugins, server)
    }

    /// A create of the guest's task type with its inputs and `connection`.
    fn create(
        self,
        rust_task: &str,
        python_fault: &str,
        inputs: Vec<(
            &'static str,
            flyte_connect::proto::core::Literal,
            SimpleType,
        )>,
        connection: &Connection,
    ) -> CreateTaskRequest {
        let (task_type, mut typed) = match self {
            Self::Rust => (rust_task, Vec::new()),
            Self::Python => (
                "faulty_py",
                vec![("fault", string(python_fault), simple(SimpleType::String))],
            ),
        };
        typed.extend(
            inputs
                .into_iter()
                .map(|(name, literal, kind)| (name, literal, simple(kind))),
        );
        CreateTaskRequest {
            connection: Some(connection.clone()),
            ..literals::create_request(task_type, &TypedInputs(typed))
        }
    }

    /// A `tally` call that keeps `keep_kib` more KiB and takes `wait_ms`.
    fn tally_request(
        self,
        connection: &Connection,
        keep_kib: i64,
        wait_ms: i64,
    ) -> CreateTaskRequest {
        let wait = match self {
            Self::Rust => ("ms", int(wait_ms), SimpleType::Integer),
            Self::Python => (
                "seconds",
                string(&format!("{}", wait_ms as f64 / 1000.0)),
                SimpleType::String,
            ),
        };
        self.create(
            "tally",
            "tally",
            vec![("keep_kib", int(keep_kib), SimpleType::Integer), wait],
            connection,
        )
    }

    /// A call that never returns: the deadline stops it.
    fn runaway(self, connection: &Connection) -> CreateTaskRequest {
        self.create("sleep", "loop", Vec::new(), connection)
    }

    /// A call that allocates until the memory cap stops it.
    fn hoard(self, connection: &Connection) -> CreateTaskRequest {
        self.create("memory", "memory", Vec::new(), connection)
    }
}

/// A connection of tenant `tenant` (a secret), with `configs`.
fn tenant(tenant: &str, configs: &[(&str, &str)]) -> Connection {
    Connection {
        secrets: [("tenant".to_owned(), tenant.to_owned())].into(),
        configs: configs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

fn parse_tally(meta: &[u8]) -> Tally {
    let value: Value = serde_json::from_slice(meta).expect("the meta is JSON");
    // The Python component nests its report as JSON text.
    let value = match value.get("tally").and_then(Value::as_str) {
        Some(text) => serde_json::from_str(text).expect("the tally is JSON"),
        None => value,
    };
    Tally {
        instance: value["instance"]
            .as_str()
            .expect("an instance id")
            .to_owned(),
        calls: value["calls"].as_u64().expect("a call count"),
        seen: value["seen"]
            .as_array()
            .expect("the tenants seen")
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_owned())
            .collect(),
    }
}

async fn tally(
    server: &Server,
    guest: Guest,
    connection: &Connection,
    keep_kib: i64,
    wait_ms: i64,
) -> Tally {
    match server
        .tasks()
        .await
        .create_task(guest.tally_request(connection, keep_kib, wait_ms))
        .await
    {
        Ok(response) => parse_tally(&response.into_inner().resource_meta),
        Err(status) => panic!(
            "a tally call failed: {status:?}\nthe server printed:\n{}",
            server.output.text()
        ),
    }
}

/// Tally calls of `tenants` (one each) all in flight at once, each holding
/// its instance `wait_ms`; their answers in the order of `tenants`.
async fn tally_at_once<'t>(
    server: &Server,
    guest: Guest,
    tenants: &[&'t str],
    wait_ms: i64,
) -> Vec<(&'t str, Tally)> {
    let mut calls = Vec::new();
    for &name in tenants {
        let request = guest.tally_request(&tenant(name, &[]), 0, wait_ms);
        let mut client = server.tasks().await;
        calls.push(tokio::spawn(
            async move { client.create_task(request).await },
        ));
    }
    let mut answers = Vec::new();
    for (&name, call) in tenants.iter().zip(calls) {
        match call.await.expect("a call's task") {
            Ok(response) => answers.push((name, parse_tally(&response.into_inner().resource_meta))),
            Err(status) => panic!(
                "a tally call of tenant {name} failed: {status:?}\nthe server printed:\n{}",
                server.output.text()
            ),
        }
    }
    answers
}

fn instances(server: &Server, guest: Guest, start: &str) -> f64 {
    metric_value(
        &server.metrics_text(),
        "flyte_connector_instances_total",
        &[("connector", guest.connector()), ("start", start)],
    )
    .unwrap_or(0.0)
}

fn idle(server: &Server) -> f64 {
    metric_value(
        &server.metrics_text(),
        "flyte_connector_idle_instances",
        &[],
    )
    .unwrap_or(-1.0)
}

const REUSE: &str = "instance_reuse = \"connection\"\n";

/// Runs `body` for the Rust and then the Python component.
macro_rules! both_guests {
    ($rust:ident, $python:ident, $body:ident) => {
        #[tokio::test]
        async fn $rust() {
            $body(Guest::Rust).await;
        }

        #[tokio::test]
        async fn $python() {
            $body(Guest::Python).await;
        }
    };
}

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
both_guests!(
    rust_calls_are_fresh_by_default,
    python_calls_are_fresh_by_default,
    fresh_by_default
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
both_guests!(
    rust_reuse_stays_within_a_tenant,
    python_reuse_stays_within_a_tenant,
    reuse_within_a_tenant_only
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
both_guests!(
    rust_concurrent_tenants_never_share,
    python_concurrent_tenants_never_share,
    concurrent_tenants_never_share
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
both_guests!(
    rust_failed_instances_are_dropped,
    python_failed_instances_are_dropped,
    failed_instances_are_dropped
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
both_guests!(
    rust_reload_starts_fresh,
    python_reload_starts_fresh,
    reload_starts_fresh
);

async fn reuse_is_bounded(guest: Guest) {
    let (_plugins, server) = guest.serve(
        REUSE,
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
both_guests!(
    rust_reuse_is_bounded,
    python_reuse_is_bounded,
    reuse_is_bounded
);

/// By default a component keeps as many idle instances as it just had
/// calls in flight, more than the floor of twice the workers, so a steady
/// load of waiting calls finds an instance for each call.
async fn idle_instances_follow_the_calls_in_flight(guest: Guest) {
    let (_plugins, server) =
        guest.serve(REUSE, &["--worker", "1", "--idle-instance-timeout", "30"]);
    let tenants = ["a"; 8];
    tally_at_once(&server, guest, &tenants, 500).await;
    assert_eq!(
        idle(&server),
        8.0,
        "eight calls ran at once, above the floor of two"
    );
    // Eight at once again: each finds one of them, none starts afresh.
    let again = tally_at_once(&server, guest, &tenants, 300).await;
    assert!(again.iter().all(|(_, tally)| tally.calls >= 2), "{again:?}");
    assert_eq!(instances(&server, guest, "fresh"), 8.0);
    assert_eq!(instances(&server, guest, "reused"), 8.0);
}
both_guests!(
    rust_idle_instances_follow_the_calls_in_flight,
    python_idle_instances_follow_the_calls_in_flight,
    idle_instances_follow_the_calls_in_flight
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
