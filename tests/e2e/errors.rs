//! Every error a client can get, with the Python server's codes and messages
//! where it has them, and precise codes where it answers UNKNOWN.

use flyte_connect::proto::{
    connector::{
        CreateTaskRequest, DeleteTaskRequest, GetConnectorRequest, GetTaskLogsRequest,
        GetTaskMetricsRequest, GetTaskRequest,
    },
    core::{Literal, SimpleType},
    task::{Inputs, NamedLiteral},
};
use flyte_connect_e2e::{
    Server, Workspace,
    literals::{self, TypedInputs, category, int, simple, template},
};
use std::time::Duration;

use tonic::Code;

fn start(components: &[&str], extra: &[&str]) -> (Workspace, Server) {
    let plugins = Workspace::with_components(components);
    let dir = plugins.path().display().to_string();
    let mut args = vec!["--plugin-dir", dir.as_str()];
    args.extend_from_slice(extra);
    let server = Server::start(&args, plugins.path());
    (plugins, server)
}

fn create(task_type: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        template: Some(template(task_type)),
        ..Default::default()
    }
}

#[tokio::test]
async fn unknown_task_type_is_not_found_on_every_task_rpc() {
    let (_plugins, server) = start(&["echo"], &[]);
    let mut tasks = server.tasks().await;
    let expected = "Cannot find connector for task type: nope.";

    let status = tasks.create_task(create("nope")).await.expect_err("create");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, expected)
    );
    let status = tasks
        .get_task(GetTaskRequest {
            task_category: category("nope"),
            ..Default::default()
        })
        .await
        .expect_err("get");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, expected)
    );
    let status = tasks
        .delete_task(DeleteTaskRequest {
            task_category: category("nope"),
            ..Default::default()
        })
        .await
        .expect_err("delete");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, expected)
    );
    let status = tasks
        .get_task_metrics(GetTaskMetricsRequest {
            task_category: category("nope"),
            ..Default::default()
        })
        .await
        .expect_err("metrics");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, expected)
    );
    let status = tasks
        .get_task_logs(GetTaskLogsRequest {
            task_category: category("nope"),
            ..Default::default()
        })
        .await
        .expect_err("logs");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, expected)
    );

    // The connector is looked up before the inputs are converted: an
    // unknown task type with inputs that could never be converted is still
    // NOT_FOUND, as the Python server answers.
    let mut unconvertible = create("nope");
    unconvertible.inputs = Some(Inputs {
        literals: vec![NamedLiteral {
            name: "x".into(),
            value: Some(Literal::default()),
        }],
        ..Default::default()
    });
    let status = tasks
        .create_task(unconvertible)
        .await
        .expect_err("create with bad inputs");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, expected)
    );

    // A known name with an unknown version is not found either.
    let mut versioned = create("echo");
    if let Some(t) = versioned.template.as_mut() {
        t.task_type_version = 7;
    }
    let status = tasks.create_task(versioned).await.expect_err("create v7");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "Cannot find connector for task type: echo.")
    );
}

#[tokio::test]
async fn unknown_connector_name_is_not_found() {
    let (_plugins, server) = start(&["echo"], &[]);
    let status = server
        .metadata()
        .await
        .get_connector(GetConnectorRequest {
            name: "nope".into(),
        })
        .await
        .expect_err("GetConnector");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("nope"), "{}", status.message());
}

#[tokio::test]
async fn connector_failure_is_internal_with_the_python_message() {
    let (_plugins, server) = start(&["faulty"], &[]);
    let status = server
        .tasks()
        .await
        .create_task(create("fail"))
        .await
        .expect_err("fail");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        status.message(),
        "failed to create fail task with error:\n the external service said no."
    );
}

#[tokio::test]
async fn an_enormous_error_text_is_cut_in_the_answer_and_the_log() {
    let (_plugins, server) = start(&["faulty"], &[]);
    let logged_before = server.output.text().len();
    for kib in [200, 4096] {
        let request = literals::create_request(
            "shout",
            &TypedInputs(vec![("kib", int(kib), simple(SimpleType::Integer))]),
        );
        let status = server
            .tasks()
            .await
            .create_task(request)
            .await
            .expect_err("shout");
        // The connector's failure, as the Python server words it, cut.
        assert_eq!(status.code(), Code::Internal, "{kib} KiB");
        let message = status.message();
        assert!(
            message.starts_with("failed to create shout task with error:\n !!!"),
            "{kib} KiB: {}",
            &message[..60.min(message.len())]
        );
        assert!(
            message.ends_with(" more bytes cut]."),
            "{kib} KiB: {}",
            &message[message.len().saturating_sub(60)..]
        );
        assert!(
            message.len() < 8 << 10,
            "{kib} KiB: {} bytes",
            message.len()
        );
    }
    // Two failures, a few KiB each in the log, not 4 MiB.
    std::thread::sleep(Duration::from_millis(200));
    let logged = server.output.text().len() - logged_before;
    assert!(logged < 64 << 10, "{logged} bytes logged");
}

#[tokio::test]
async fn panicking_connector_fails_only_that_call_and_the_server_keeps_serving() {
    let (_plugins, server) = start(&["echo", "faulty"], &[]);
    let mut tasks = server.tasks().await;
    for _ in 0..3 {
        let status = tasks.create_task(create("panic")).await.expect_err("panic");
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status
                .message()
                .starts_with("failed to create panic task with error:\n"),
            "{}",
            status.message()
        );
        assert!(
            status
                .message()
                .contains("faulty connector panicked on purpose"),
            "the panic message should reach the client: {}",
            status.message()
        );
    }
    let inputs = TypedInputs(vec![("x", int(5), simple(SimpleType::Integer))]);
    let created = tasks
        .create_task(literals::create_request("echo", &inputs))
        .await;
    assert!(created.is_ok(), "echo after panics: {created:?}");
    server
        .output
        .once("the guest's panic", |text| {
            text.contains("faulty connector panicked on purpose")
        })
        .await;
}

#[tokio::test]
async fn connector_rejecting_the_request_is_invalid_argument() {
    let (_plugins, server) = start(&["faulty"], &[]);
    let status = server
        .tasks()
        .await
        .create_task(create("invalid"))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "failed to create invalid task with error:\n the faulty connector rejects every request."
    );
}

#[tokio::test]
async fn requests_that_cannot_be_served_are_invalid_argument() {
    let (_plugins, server) = start(&["echo"], &[]);
    let mut tasks = server.tasks().await;

    let status = tasks
        .create_task(CreateTaskRequest::default())
        .await
        .expect_err("no template");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("template"),
        "{}",
        status.message()
    );

    let status = tasks
        .get_task(GetTaskRequest::default())
        .await
        .expect_err("no category");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("task_category"),
        "{}",
        status.message()
    );

    let status = tasks
        .get_task(GetTaskRequest {
            task_category: category("echo"),
            resource_meta: b"not json".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("bad meta");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status
            .message()
            .starts_with("failed to get echo task with error:\n"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn metrics_and_logs_of_a_connector_without_them_are_unimplemented() {
    let (_plugins, server) = start(&["faulty"], &[]);
    let mut tasks = server.tasks().await;
    let status = tasks
        .get_task_metrics(GetTaskMetricsRequest {
            task_category: category("fail"),
            resource_meta: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("metrics");
    assert_eq!(status.code(), Code::Unimplemented, "{}", status.message());
    let status = tasks
        .get_task_logs(GetTaskLogsRequest {
            task_category: category("fail"),
            resource_meta: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("logs");
    assert_eq!(status.code(), Code::Unimplemented, "{}", status.message());
}

#[tokio::test]
async fn connector_past_its_deadline_is_stopped_with_deadline_exceeded() {
    let (_plugins, server) = start(&["echo", "faulty"], &["--call-timeout", "1"]);
    let mut tasks = server.tasks().await;
    let status = tasks.create_task(create("sleep")).await.expect_err("sleep");
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    // The runaway guest was stopped: the server still answers.
    let inputs = TypedInputs(vec![("x", int(1), simple(SimpleType::Integer))]);
    assert!(
        tasks
            .create_task(literals::create_request("echo", &inputs))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn connector_exceeding_its_memory_cap_fails_only_that_call() {
    let (_plugins, server) = start(&["echo", "faulty"], &["--memory-limit-mb", "64"]);
    let mut tasks = server.tasks().await;
    let status = tasks
        .create_task(create("memory"))
        .await
        .expect_err("memory");
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    assert!(
        status
            .message()
            .starts_with("failed to create memory task with error:\n"),
        "{}",
        status.message()
    );
    let inputs = TypedInputs(vec![("x", int(1), simple(SimpleType::Integer))]);
    assert!(
        tasks
            .create_task(literals::create_request("echo", &inputs))
            .await
            .is_ok()
    );
}
