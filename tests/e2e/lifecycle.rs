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

/// Tells a service started with `run_until` to stop, and waits for a clean exit.
async fn stop_library(
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    stop.send(()).expect("signal stop");
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("stops in time")
        .expect("join")
        .expect("serves cleanly");
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
    stop_library(stop, serving).await;
}

#[tokio::test]
async fn library_serves_an_in_process_connector_beside_components() {
    use flyte_connect::proto::{
        connector::{
            GetTaskRequest, ListConnectorsRequest,
            async_connector_service_client::AsyncConnectorServiceClient,
            connector_metadata_service_client::ConnectorMetadataServiceClient,
        },
        core::SimpleType,
    };
    use flyte_connect_e2e::{
        literals::{self, TypedInputs, category, int, simple},
        native::NativeConnector,
    };

    // The library does not report the port it bound, so pick a free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let plugins = Workspace::with_components(&["faulty"]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = ConnectorService::new(ServerConfig {
        port,
        ..quick_config(plugins.path())
    })
    .with_connector(NativeConnector::<echo::Echo>::shared());
    let serving = tokio::spawn(service.run_until(async {
        let _ = stopped.await;
    }));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("a valid URI");
    let started = std::time::Instant::now();
    let channel = loop {
        if let Ok(channel) = endpoint.connect().await {
            break channel;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the library did not serve"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let listed = ConnectorMetadataServiceClient::new(channel.clone())
        .list_connectors(ListConnectorsRequest {})
        .await
        .expect("ListConnectors")
        .into_inner();
    let mut names: Vec<_> = listed.connectors.into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(names, ["Echo Connector", "Faulty Connector"]);

    let mut tasks = AsyncConnectorServiceClient::new(channel);
    let inputs = TypedInputs(vec![("n", int(41), simple(SimpleType::Integer))]);
    let meta = tasks
        .create_task(literals::create_request("echo", &inputs))
        .await
        .expect("create on the native echo")
        .into_inner()
        .resource_meta;
    let resource = tasks
        .get_task(GetTaskRequest {
            task_category: category("echo"),
            resource_meta: meta,
            ..Default::default()
        })
        .await
        .expect("get on the native echo")
        .into_inner()
        .resource
        .expect("a resource");
    let outputs = resource.outputs.expect("outputs");
    assert_eq!(outputs.literals[0].value, Some(int(41)));

    stop_library(stop, serving).await;
}
