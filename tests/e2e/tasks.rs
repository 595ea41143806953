//! The task RPCs on the echo connector, and the metadata service.

use flyte_connect::proto::{
    connector::{
        CreateTaskRequest, DeleteTaskRequest, GetConnectorRequest, GetTaskLogsRequest,
        GetTaskMetricsRequest, GetTaskRequest, ListConnectorsRequest, get_task_logs_response::Part,
    },
    core::{Connection, SimpleType, task_execution::Phase},
};
use flyte_connect_e2e::{
    Server, Workspace,
    literals::{
        self, TypedInputs, boolean, category, float, int, list, list_of, map, map_of, simple,
        string,
    },
};
use tokio_stream::StreamExt;

fn echo_inputs() -> TypedInputs {
    TypedInputs(vec![
        ("count", int(i64::MAX), simple(SimpleType::Integer)),
        ("ratio", float(2.0), simple(SimpleType::Float)),
        ("name", string("héllo, wörld"), simple(SimpleType::String)),
        ("flag", boolean(true), simple(SimpleType::Boolean)),
        (
            "ids",
            list(vec![int(1), int(-2), int(3)]),
            list_of(simple(SimpleType::Integer)),
        ),
        (
            "weights",
            map(vec![
                ("a", float(0.5)),
                ("b", float(-1.0)),
                ("c", float(1e300)),
            ]),
            map_of(simple(SimpleType::Float)),
        ),
    ])
}

#[tokio::test]
async fn echo_returns_its_inputs_as_identical_output_literals() {
    let plugins = Workspace::with_components(&["echo"]);
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    let mut tasks = server.tasks().await;
    let inputs = echo_inputs();

    let created = tasks
        .create_task(literals::create_request("echo", &inputs))
        .await
        .expect("CreateTask")
        .into_inner();
    assert!(!created.resource_meta.is_empty());

    let resource = tasks
        .get_task(GetTaskRequest {
            resource_meta: created.resource_meta.clone(),
            task_category: category("echo"),
            ..Default::default()
        })
        .await
        .expect("GetTask")
        .into_inner()
        .resource
        .expect("a resource");
    assert_eq!(resource.phase(), Phase::Succeeded);
    let outputs = resource.outputs.expect("outputs");
    assert_eq!(
        outputs.literals,
        inputs.inputs().literals,
        "outputs differ from inputs"
    );

    tasks
        .delete_task(DeleteTaskRequest {
            resource_meta: created.resource_meta,
            task_category: category("echo"),
            ..Default::default()
        })
        .await
        .expect("DeleteTask");
}

#[tokio::test]
async fn echo_logs_stream_a_header_then_one_line_per_input() {
    let plugins = Workspace::with_components(&["echo"]);
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    let mut tasks = server.tasks().await;
    let inputs = TypedInputs(vec![
        ("a", int(1), simple(SimpleType::Integer)),
        ("b", string("x"), simple(SimpleType::String)),
    ]);
    let meta = tasks
        .create_task(literals::create_request("echo", &inputs))
        .await
        .expect("CreateTask")
        .into_inner()
        .resource_meta;

    let mut stream = tasks
        .get_task_logs(GetTaskLogsRequest {
            resource_meta: meta.clone(),
            task_category: category("echo"),
            ..Default::default()
        })
        .await
        .expect("GetTaskLogs")
        .into_inner();
    let mut parts = Vec::new();
    while let Some(part) = stream.next().await {
        parts.push(part.expect("a log part").part.expect("a part"));
    }
    assert!(
        matches!(&parts[0], Part::Header(header) if header.token.is_empty()),
        "{parts:?}"
    );
    let Part::Body(body) = &parts[1] else {
        panic!("expected a body: {parts:?}")
    };
    let lines: Vec<&str> = body.lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(lines, ["a=1", "b=\"x\""]);

    let metrics = tasks
        .get_task_metrics(GetTaskMetricsRequest {
            resource_meta: meta,
            task_category: category("echo"),
            queries: vec!["cpu".into(), "memory".into()],
            ..Default::default()
        })
        .await
        .expect("GetTaskMetrics")
        .into_inner();
    let names: Vec<&str> = metrics.results.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(names, ["cpu", "memory"]);
}

#[tokio::test]
async fn list_connectors_groups_task_types_under_connector_names() {
    let plugins = Workspace::with_components(&["echo", "faulty"]);
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    let mut metadata = server.metadata().await;
    let listed = metadata
        .list_connectors(ListConnectorsRequest {})
        .await
        .expect("ListConnectors")
        .into_inner();
    let summary: Vec<(String, Vec<String>)> = listed
        .connectors
        .iter()
        .map(|c| {
            let mut types: Vec<String> = c
                .supported_task_categories
                .iter()
                .map(|t| format!("{}:{}", t.name, t.version))
                .collect();
            types.sort();
            (c.name.clone(), types)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Echo Connector".to_owned(), vec!["echo:0".to_owned()]),
            (
                "Faulty Connector".to_owned(),
                [
                    "fail:0",
                    "fan_out:0",
                    "fetch:0",
                    "inspect:0",
                    "invalid:0",
                    "memory:0",
                    "panic:0",
                    "remember:0",
                    "shout:0",
                    "sleep:0",
                    "slow:0",
                    "ssh:0",
                    "tally:0",
                    "touch:0"
                ]
                .map(String::from)
                .to_vec()
            ),
        ]
    );

    let echo = metadata
        .get_connector(GetConnectorRequest {
            name: "Echo Connector".into(),
        })
        .await
        .expect("GetConnector")
        .into_inner()
        .connector
        .expect("a connector");
    assert_eq!(echo.name, "Echo Connector");
    assert_eq!(echo.supported_task_categories.len(), 1);
}

/// Creates an `inspect` task of the faulty connector with `connection` and
/// returns what it saw, as GetTask's `custom_info`.
async fn inspect(server: &Server, connection: Option<Connection>) -> serde_json::Value {
    let mut tasks = server.tasks().await;
    let meta = tasks
        .create_task(CreateTaskRequest {
            template: Some(literals::template("inspect")),
            connection,
            ..Default::default()
        })
        .await
        .expect("CreateTask")
        .into_inner()
        .resource_meta;
    let resource = tasks
        .get_task(GetTaskRequest {
            resource_meta: meta,
            task_category: category("inspect"),
            ..Default::default()
        })
        .await
        .expect("GetTask")
        .into_inner()
        .resource
        .expect("a resource");
    serde_json::to_value(resource.custom_info.expect("custom_info")).expect("custom_info as JSON")
}

#[tokio::test]
async fn connection_secrets_and_configs_reach_the_connector_merged_configs_winning() {
    let plugins = Workspace::with_components(&["faulty"]);
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    let connection = Connection {
        task_type: "inspect".into(),
        secrets: [("token", "s3cr3t"), ("region", "from-secret")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        configs: [("region", "from-config"), ("project", "p")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
    };
    let seen = inspect(&server, Some(connection)).await;
    assert_eq!(
        seen["connection"],
        serde_json::json!({"project": "p", "region": "from-config", "token": "s3cr3t"})
    );
    assert!(
        !server.output.text().contains("s3cr3t"),
        "a secret reached the log"
    );
}

#[tokio::test]
async fn manifest_env_reaches_the_component_and_nothing_else_does() {
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write("faulty.toml", b"[env]\nREGION = \"eu-west\"\n");
    let server = Server::start_with_env(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
        &[("HOST_ONLY_SECRET", "do-not-leak")],
    );
    let seen = inspect(&server, None).await;
    assert_eq!(seen["env"], serde_json::json!({"REGION": "eu-west"}));
}

#[tokio::test]
async fn the_whole_template_reaches_the_connector_as_proto3_json() {
    use flyte_connect::proto::core::{
        ExtendedResources, GpuAccelerator, Identifier, RetryStrategy, SecurityContext, Sql,
        TaskMetadata, TaskTemplate, sql::Dialect, task_template::Target,
    };
    let plugins = Workspace::with_components(&["faulty"]);
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    let custom: pbjson_types::Struct = serde_json::from_value(
        serde_json::json!({"warehouse": "w1", "nested": {"retries": 3.0, "on": true}}),
    )
    .expect("a struct");
    let template = TaskTemplate {
        id: Some(Identifier {
            project: "p".into(),
            name: "my_task".into(),
            ..Default::default()
        }),
        r#type: "inspect".into(),
        metadata: Some(TaskMetadata {
            retries: Some(RetryStrategy {
                retries: 2,
                ..Default::default()
            }),
            timeout: Some(pbjson_types::Duration {
                seconds: 90,
                nanos: 0,
            }),
            tags: [("team".to_owned(), "data".to_owned())].into(),
            ..Default::default()
        }),
        custom: Some(custom),
        config: [("region".to_owned(), "eu".to_owned())].into(),
        target: Some(Target::Sql(Sql {
            statement: "SELECT 1".into(),
            dialect: Dialect::Ansi as i32,
        })),
        security_context: Some(SecurityContext::default()),
        extended_resources: Some(ExtendedResources {
            gpu_accelerator: Some(GpuAccelerator {
                device: "nvidia-l4".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut tasks = server.tasks().await;
    let meta = tasks
        .create_task(CreateTaskRequest {
            template: Some(template),
            output_prefix: "s3://bucket/out".into(),
            ..Default::default()
        })
        .await
        .expect("CreateTask")
        .into_inner()
        .resource_meta;
    let seen: serde_json::Value = serde_json::from_slice(&meta).expect("inspect's meta is JSON");
    let template = &seen["template"];
    assert_eq!(template["type"], "inspect");
    assert_eq!(template["id"]["name"], "my_task");
    assert_eq!(
        template["custom"],
        serde_json::json!({"warehouse": "w1", "nested": {"retries": 3.0, "on": true}})
    );
    assert_eq!(template["config"], serde_json::json!({"region": "eu"}));
    assert_eq!(
        template["sql"],
        serde_json::json!({"statement": "SELECT 1", "dialect": "ANSI"})
    );
    assert_eq!(template["metadata"]["retries"]["retries"], 2);
    assert_eq!(template["metadata"]["timeout"], "90s");
    assert_eq!(
        template["metadata"]["tags"],
        serde_json::json!({"team": "data"})
    );
    assert_eq!(
        template["extendedResources"]["gpuAccelerator"]["device"],
        "nvidia-l4"
    );
    assert_eq!(seen["output_prefix"], "s3://bucket/out");
}

#[tokio::test]
async fn an_input_that_cannot_be_converted_is_invalid_argument_naming_it() {
    use flyte_connect::proto::{
        core::{Binary, Literal, Scalar, TaskTemplate, literal, scalar},
        task::{Inputs, NamedLiteral},
    };
    let plugins = Workspace::with_components(&["echo"]);
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    let garbage_msgpack = Literal {
        value: Some(literal::Value::Scalar(Box::new(Scalar {
            value: Some(scalar::Value::Binary(Binary {
                value: vec![0x92, 0x01],
                tag: "msgpack".into(),
            })),
        }))),
        ..Default::default()
    };
    for (name, literal) in [
        ("empty", Literal::default()),
        ("bad_msgpack", garbage_msgpack),
    ] {
        let status = server
            .tasks()
            .await
            .create_task(CreateTaskRequest {
                inputs: Some(Inputs {
                    literals: vec![NamedLiteral {
                        name: name.into(),
                        value: Some(literal),
                    }],
                    ..Default::default()
                }),
                template: Some(TaskTemplate {
                    r#type: "echo".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("unconvertible input");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{}",
            status.message()
        );
        assert!(
            status.message().contains(&format!("input \"{name}\"")),
            "{}",
            status.message()
        );
    }
}
