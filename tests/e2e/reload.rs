//! Hot reload: adding, replacing and removing components and manifests in a
//! plugin folder takes effect without a restart, calls in flight finish on
//! the version they started with, and a broken replacement changes nothing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use flyte_connect::proto::{
    connector::{CreateTaskRequest, DeleteTaskRequest, GetTaskRequest},
    core::SimpleType,
};
use flyte_connect_e2e::{
    Server, Workspace, eventually,
    literals::{self, TypedInputs, category, int, simple, template},
    metric_value,
};
use tonic::Code;

/// How long a change may take to show (it takes well under 2 s; this only
/// keeps a slow CI machine from failing the test).
const RELOADED_WITHIN: Duration = Duration::from_secs(15);

fn start(plugins: &Workspace, extra: &[&str]) -> Server {
    let dir = plugins.path().display().to_string();
    let mut args = vec!["--plugin-dir", dir.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args, plugins.path())
}

async fn wait_for_connectors(server: &Server, expected: &[&str]) {
    eventually(
        RELOADED_WITHIN,
        &format!("serving {expected:?}"),
        || async { server.connector_names().await == expected },
    )
    .await;
}

fn reloads(server: &Server, outcome: &str) -> f64 {
    metric_value(
        &server.metrics_text(),
        "flyte_connector_reloads_total",
        &[("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

fn create(task_type: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        template: Some(template(task_type)),
        ..Default::default()
    }
}

fn slow(ms: i64) -> CreateTaskRequest {
    literals::create_request(
        "slow",
        &TypedInputs(vec![("ms", int(ms), simple(SimpleType::Integer))]),
    )
}

#[tokio::test]
async fn an_added_component_is_served_and_a_removed_one_is_not() {
    let plugins = Workspace::with_components(&["echo"]);
    let server = start(&plugins, &[]);
    assert_eq!(server.connector_names().await, ["Echo Connector"]);

    plugins.add_component("faulty", "faulty.wasm");
    wait_for_connectors(&server, &["Echo Connector", "Faulty Connector"]).await;
    let status = server
        .tasks()
        .await
        .create_task(create("fail"))
        .await
        .expect_err("fail fails");
    assert_eq!(status.code(), Code::Internal, "the new connector answers");
    assert_eq!(reloads(&server, "added"), 1.0);

    std::fs::remove_file(plugins.path().join("faulty.wasm")).expect("remove faulty.wasm");
    wait_for_connectors(&server, &["Echo Connector"]).await;
    let status = server
        .tasks()
        .await
        .create_task(create("fail"))
        .await
        .expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reloads(&server, "removed"), 1.0);
}

#[tokio::test]
async fn a_file_still_being_written_is_loaded_only_once_complete() {
    let plugins = Workspace::new();
    let server = start(&plugins, &[]);
    let bytes = std::fs::read(flyte_connect_e2e::component("faulty")).expect("read faulty");
    let target = plugins.path().join("faulty.wasm");
    std::fs::write(&target, &bytes[..bytes.len() / 2]).expect("write the first half");
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::write(&target, &bytes).expect("write the whole file");
    wait_for_connectors(&server, &["Faulty Connector"]).await;
    assert_eq!(reloads(&server, "failed"), 0.0, "{}", server.output.text());
    assert!(
        !server.output.text().contains("skipping plugin"),
        "a half-written file was loaded:\n{}",
        server.output.text()
    );
}

#[tokio::test]
async fn replacing_a_component_under_load_fails_no_call() {
    let plugins = Workspace::with_components(&["echo"]);
    let server = start(&plugins, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let inputs = TypedInputs(vec![("x", int(3), simple(SimpleType::Integer))]);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut tasks = server.tasks().await;
        let (stop, done, failed) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&failed));
        let request = literals::create_request("echo", &inputs);
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let cycle = async {
                    let meta = tasks.create_task(request.clone()).await?.into_inner();
                    tasks
                        .get_task(GetTaskRequest {
                            task_category: category("echo"),
                            resource_meta: meta.resource_meta.clone(),
                            ..Default::default()
                        })
                        .await?;
                    tasks
                        .delete_task(DeleteTaskRequest {
                            task_category: category("echo"),
                            resource_meta: meta.resource_meta,
                            ..Default::default()
                        })
                        .await
                };
                match cycle.await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Overwritten in place (truncate, then write), the harsh way.
    plugins.add_variant("echo", "echo.wasm", "version 2");
    eventually(RELOADED_WITHIN, "echo.wasm replaced", || async {
        reloads(&server, "replaced") == 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("join");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "calls failed during the replacement"
    );
    assert!(done.load(Ordering::Relaxed) > 0);
    assert_eq!(server.connector_names().await, ["Echo Connector"]);
}

#[tokio::test]
async fn a_call_in_flight_finishes_on_the_version_it_started_with() {
    let plugins = Workspace::new();
    plugins.add_component("faulty", "plugin.wasm");
    let server = start(&plugins, &[]);
    let mut tasks = server.tasks().await;
    let in_flight = tokio::spawn(async move { tasks.create_task(slow(1500)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    plugins.add_component("echo", "plugin.wasm");
    wait_for_connectors(&server, &["Echo Connector"]).await;
    let answer = in_flight.await.expect("join");
    assert!(
        answer.is_ok(),
        "the old version finished the call: {answer:?}"
    );
    let status = server
        .tasks()
        .await
        .create_task(slow(10))
        .await
        .expect_err("the new version has no `slow`");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_broken_replacement_leaves_the_old_version_serving() {
    let plugins = Workspace::with_components(&["echo"]);
    let server = start(&plugins, &[]);
    plugins.write("echo.wasm", b"\0asm this is no longer a component");
    eventually(RELOADED_WITHIN, "the failed reload counted", || async {
        reloads(&server, "failed") == 1.0
    })
    .await;
    let output = server.output.text();
    assert!(
        output.lines().any(|l| l.contains("WARN")
            && l.contains("cannot reload plugin")
            && l.contains("echo.wasm")
            && l.contains("keeps serving")),
        "no warning says why:\n{output}"
    );
    let inputs = TypedInputs(vec![("x", int(1), simple(SimpleType::Integer))]);
    assert!(
        server
            .tasks()
            .await
            .create_task(literals::create_request("echo", &inputs))
            .await
            .is_ok(),
        "the old version serves on"
    );
    assert_eq!(server.connector_names().await, ["Echo Connector"]);
}

#[tokio::test]
async fn a_changed_manifest_reloads_its_component() {
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write("faulty.toml", b"[env]\nREGION = \"eu\"\n");
    let server = start(&plugins, &[]);
    let region = || async {
        let meta = server
            .tasks()
            .await
            .create_task(create("inspect"))
            .await
            .expect("inspect")
            .into_inner()
            .resource_meta;
        let seen: serde_json::Value = serde_json::from_slice(&meta).expect("JSON meta");
        seen["env"]["REGION"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(region().await, "eu");
    plugins.write("faulty.toml", b"[env]\nREGION = \"us\"\n");
    eventually(RELOADED_WITHIN, "the new manifest applies", || async {
        region().await == "us"
    })
    .await;
    assert_eq!(reloads(&server, "replaced"), 1.0);
}

#[tokio::test]
async fn without_watching_sighup_reloads() {
    let plugins = Workspace::new();
    let server = start(&plugins, &["--no-reload"]);
    plugins.add_component("echo", "echo.wasm");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        server.connector_names().await.is_empty(),
        "reloaded unasked"
    );
    server.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for_connectors(&server, &["Echo Connector"]).await;
}

#[tokio::test]
async fn modules_given_on_the_command_line_are_not_reloaded() {
    // The module sits in the watched folder too; it is loaded once, as a module.
    let plugins = Workspace::with_components(&["echo"]);
    let module = plugins.path().join("echo.wasm").display().to_string();
    let server = start(&plugins, &["--modules", &module]);
    plugins.write("echo.wasm", b"garbage");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reloads(&server, "failed"), 0.0);
    assert_eq!(server.connector_names().await, ["Echo Connector"]);
}
