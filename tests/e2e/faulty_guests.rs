//! The faulty test components as the reuse and concurrency tests drive
//! them: the Rust one, and the Python one built for each world of the
//! contract (`faulty-py`, the async world the Python SDK builds by default;
//! `faulty-py-sync`, the sync world). Each remembers what its instance saw
//! (the `tally` fault: an instance id, the calls it served, the tenants of
//! the earlier ones, the most calls it had in flight at once, the calls it
//! saw unwind when given up).

use std::time::Duration;

use flyte_connect::proto::{
    connector::CreateTaskRequest,
    core::{Connection, SimpleType},
};
use flyte_connect_e2e::{
    Server, Workspace,
    literals::{self, TypedInputs, int, simple, string},
    metric_value,
};
use serde_json::Value;

/// How long a change may take to show on a slow CI machine.
pub const WITHIN: Duration = Duration::from_secs(15);

/// A faulty component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// `faulty`, of the sync world.
    Rust,
    /// `faulty-py`, of the async world.
    Python,
    /// `faulty-py-sync`, the same built for the sync world.
    PythonSync,
}

/// What one `tally` call reported of its instance.
#[derive(Debug)]
pub struct Tally {
    pub instance: String,
    pub calls: u64,
    pub seen: Vec<String>,
    /// The most tally calls in flight at once in the instance (Python).
    pub most: u64,
    /// The `hang` calls the instance saw unwind (Python).
    pub unwound: u64,
}

impl Guest {
    pub fn component(self) -> &'static str {
        match self {
            Self::Rust => "faulty",
            Self::Python => "faulty-py",
            Self::PythonSync => "faulty-py-sync",
        }
    }

    pub fn connector(self) -> &'static str {
        match self {
            Self::Rust => "Faulty Connector",
            Self::Python | Self::PythonSync => "Faulty Connector (Python)",
        }
    }

    /// Whether calls of one tenant share its instances at once.
    pub fn concurrent(self) -> bool {
        self == Self::Python
    }

    /// Serves the component with `manifest` and the server flags `extra`.
    pub fn serve(self, manifest: &str, extra: &[&str]) -> (Workspace, Server) {
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
    pub fn create(
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
            Self::Python | Self::PythonSync => (
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
    pub fn tally_request(
        self,
        connection: &Connection,
        keep_kib: i64,
        wait_ms: i64,
    ) -> CreateTaskRequest {
        let wait = match self {
            Self::Rust => ("ms", int(wait_ms), SimpleType::Integer),
            Self::Python | Self::PythonSync => (
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
    pub fn runaway(self, connection: &Connection) -> CreateTaskRequest {
        self.create("sleep", "loop", Vec::new(), connection)
    }

    /// A call that allocates until the memory cap stops it.
    pub fn hoard(self, connection: &Connection) -> CreateTaskRequest {
        self.create("memory", "memory", Vec::new(), connection)
    }
}

/// A connection of tenant `tenant` (a secret), with `configs`.
pub fn tenant(tenant: &str, configs: &[(&str, &str)]) -> Connection {
    Connection {
        secrets: [("tenant".to_owned(), tenant.to_owned())].into(),
        configs: configs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

pub fn parse_tally(meta: &[u8]) -> Tally {
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
        most: value["most"].as_u64().unwrap_or(0),
        unwound: value["unwound"].as_u64().unwrap_or(0),
    }
}

pub async fn tally(
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
pub async fn tally_at_once<'t>(
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

pub fn instances(server: &Server, guest: Guest, start: &str) -> f64 {
    metric_value(
        &server.metrics_text(),
        "flyte_connector_instances_total",
        &[("connector", guest.connector()), ("start", start)],
    )
    .unwrap_or(0.0)
}

pub fn idle(server: &Server) -> f64 {
    metric_value(
        &server.metrics_text(),
        "flyte_connector_idle_instances",
        &[],
    )
    .unwrap_or(-1.0)
}

pub const REUSE: &str = "instance_reuse = \"connection\"\n";

/// Runs `body` for each faulty component named, as a test of its own:
/// `guest_tests!(body: test_name => Rust, other_test_name => Python, ...)`.
macro_rules! guest_tests {
    ($body:ident: $($test:ident => $guest:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                $body(Guest::$guest).await;
            }
        )+
    };
}
pub(crate) use guest_tests;
