//! Stopping: `--timeout`, SIGTERM with calls in flight, and the library API.

use std::time::Duration;

use flyte_connect::{ConnectorService, ServerConfig, proto::connector::CreateTaskRequest};
use flyte_connect_e2e::{Server, Workspace, literals::template, run_to_exit};
use tonic::Code;

#[test]
fn timeout_stops_the_server_with_exit_code_zero() {
    let cwd = Workspace::new();
    let started = std::time::Instant::now();
    let (status, output) = run_to_exit(
        &[
            "c0",
            "--port",
            "0",
            "--prometheus_port",
            "0",
            "--timeout",
            "1",
        ],
        cwd.path(),
        Duration::from_secs(60),
    );
    assert!(status.success(), "{output}");
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn sigterm_finishes_calls_in_flight_then_exits_zero() {
    let plugins = Workspace::with_components(&["faulty"]);
    let server = Server::start(
        &[
            "--plugin-dir",
            &plugins.path().display().to_string(),
            "--call-timeout",
            "2",
        ],
        plugins.path(),
    );
    let mut tasks = server.tasks().await;
    let in_flight = tokio::spawn(async move {
        tasks
            .create_task(CreateTaskRequest {
                template: Some(template("sleep")),
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.signal_terminate();
    // The call still gets its real answer, not a dropped connection.
    let answer = in_flight
        .await
        .expect("join")
        .expect_err("sleep ends at its deadline");
    assert_eq!(
        answer.code(),
        Code::DeadlineExceeded,
        "{}",
        answer.message()
    );
    let mut server = server;
    let status = server.wait();
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.output.text()
    );
}

fn quick_config(plugin_dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        host: [127, 0, 0, 1].into(),
        port: 0,
        prometheus_port: 0,
        plugin_dirs: vec![plugin_dir.to_owned()],
        ..ServerConfig::default()
    }
}

#[test]
fn library_runs_blocking_from_sync_code() {
    let plugins = Workspace::with_components(&["echo"]);
    let config = ServerConfig {
        timeout: Some(Duration::from_millis(300)),
        ..quick_config(plugins.path())
    };
    ConnectorService::new(config)
        .run_blocking()
        .expect("serve then stop");
}

#[tokio::test]
async fn library_runs_from_async_code_until_told_to_stop() {
    let plugins = Workspace::with_components(&["echo"]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        ConnectorService::new(quick_config(plugins.path())).run_until(async {
            let _ = stopped.await;
        }),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!serving.is_finished(), "the service stopped by itself");
    stop.send(()).expect("signal stop");
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("stops in time")
        .expect("join")
        .expect("serves cleanly");
}
