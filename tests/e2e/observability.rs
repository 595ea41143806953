//! Health, reflection and Prometheus metrics.

use flyte_connect::proto::{
    connector::{CreateTaskRequest, DeleteTaskRequest, GetTaskRequest},
    core::SimpleType,
};
use flyte_connect_e2e::{
    Server, Workspace,
    literals::{self, TypedInputs, category, int, simple, template},
    metric_value,
};
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

fn start() -> (Workspace, Server) {
    let plugins = Workspace::with_components(&["echo", "faulty"]);
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    (plugins, server)
}

#[tokio::test]
async fn health_is_serving_for_the_server_and_both_services() {
    let (_plugins, server) = start();
    let mut health = HealthClient::new(server.channel().await);
    for service in [
        "",
        "flyteidl2.connector.AsyncConnectorService",
        "flyteidl2.connector.ConnectorMetadataService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|err| panic!("health of {service:?}: {err}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_the_connector_services() {
    let (_plugins, server) = start();
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .next()
        .await
        .expect("a response")
        .expect("no error");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "flyteidl2.connector.AsyncConnectorService",
        "flyteidl2.connector.ConnectorMetadataService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_by_task_type_operation_and_error_code() {
    let (_plugins, server) = start();
    let mut tasks = server.tasks().await;
    let inputs = TypedInputs(vec![("x", int(42), simple(SimpleType::Integer))]);
    let request = literals::create_request("echo", &inputs);
    let input_bytes = prost::Message::encoded_len(request.inputs.as_ref().expect("inputs"));
    let meta = tasks
        .create_task(request)
        .await
        .expect("create")
        .into_inner()
        .resource_meta;
    tasks
        .get_task(GetTaskRequest {
            resource_meta: meta.clone(),
            task_category: category("echo"),
            ..Default::default()
        })
        .await
        .expect("get");
    tasks
        .delete_task(DeleteTaskRequest {
            resource_meta: meta,
            task_category: category("echo"),
            ..Default::default()
        })
        .await
        .expect("delete");
    let unknown = CreateTaskRequest {
        template: Some(template("nope")),
        ..Default::default()
    };
    tasks.create_task(unknown).await.expect_err("unknown");
    let failing = CreateTaskRequest {
        template: Some(template("fail")),
        ..Default::default()
    };
    tasks.create_task(failing).await.expect_err("fail");

    let text = server.metrics_text();
    let value = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels);
    for operation in ["create", "get", "delete"] {
        assert_eq!(
            value(
                "flyte_connector_requests_success_total",
                &[("task_type", "echo"), ("operation", operation)]
            ),
            Some(1.0),
            "{operation}:\n{text}"
        );
        assert_eq!(
            value(
                "flyte_connector_request_latency_seconds_count",
                &[("task_type", "echo"), ("operation", operation)]
            ),
            Some(1.0),
            "{text}"
        );
    }
    assert_eq!(
        value(
            "flyte_connector_requests_failure_total",
            &[
                ("task_type", "_unknown"),
                ("operation", "create"),
                ("error_code", "404")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            "flyte_connector_requests_failure_total",
            &[
                ("task_type", "fail"),
                ("operation", "create"),
                ("error_code", "500")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            "flyte_connector_input_literal_bytes_sum",
            &[("task_type", "echo")]
        ),
        Some(input_bytes as f64),
        "{text}"
    );
    assert!(
        text.contains("# TYPE flyte_connector_request_latency_seconds summary"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE flyte_connector_input_literal_bytes summary"),
        "{text}"
    );
    assert!(!text.contains(r#"task_type="nope""#), "{text}");
}

#[tokio::test]
async fn ever_new_unknown_task_types_share_one_metrics_label() {
    let plugins = Workspace::with_components(&["echo"]);
    let dir = plugins.path().display().to_string();
    let server = Server::start(&["--plugin-dir", &dir], plugins.path());
    let mut tasks = server.tasks().await;
    let before = server.metrics_text().len();
    for i in 0..200 {
        let name = format!("made-up-{i}");
        let unknown = CreateTaskRequest {
            template: Some(template(&name)),
            ..Default::default()
        };
        tasks.create_task(unknown).await.expect_err("unknown");
        tasks
            .get_task(GetTaskRequest {
                task_category: category(&name),
                ..Default::default()
            })
            .await
            .expect_err("unknown");
    }
    let text = server.metrics_text();
    assert!(!text.contains("made-up-"), "{text}");
    for operation in ["create", "get"] {
        assert_eq!(
            metric_value(
                &text,
                "flyte_connector_requests_failure_total",
                &[
                    ("task_type", "_unknown"),
                    ("operation", operation),
                    ("error_code", "404")
                ]
            ),
            Some(200.0),
            "{text}"
        );
    }
    // A handful of new series (the request-duration histogram's buckets
    // among them), not 200 task types' worth of them.
    assert!(
        text.len() < before + 8192,
        "/metrics grew from {before} to {} bytes",
        text.len()
    );
}
