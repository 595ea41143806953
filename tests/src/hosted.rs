//! One connector component served by the real binary, with a manifest, as
//! the tests of connectors that call external services use it: create,
//! poll and cancel tasks with a connection, and check the log for secrets.

use flyte_connect::proto::{
    connector::{CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, Resource},
    core::{Connection, task_execution::Phase},
};

use crate::{Server, Workspace, literals::category};

/// A server running one connector component.
pub struct HostedConnector {
    /// The server; [`HostedConnector::start`] runs it with `RUST_LOG=debug`
    /// so that secret checks see everything it logs.
    pub server: Server,
    task_type: String,
    _plugins: Workspace,
}

impl HostedConnector {
    /// Serves component `name` (from the test components) with `manifest`
    /// as its `NAME.toml`, for tasks of `task_type`, logging at debug.
    pub fn start(name: &str, task_type: &str, manifest: &str) -> Self {
        Self::start_with_env(name, task_type, manifest, &[("RUST_LOG", "debug")])
    }

    /// Like [`HostedConnector::start`], with the server's environment
    /// (`RUST_LOG` at its default unless set here).
    pub fn start_with_env(
        name: &str,
        task_type: &str,
        manifest: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with_args(name, task_type, manifest, &[], env)
    }

    /// Like [`HostedConnector::start_with_env`], with more command-line
    /// arguments.
    pub fn start_with_args(
        name: &str,
        task_type: &str,
        manifest: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let plugins = Workspace::with_components(&[name]);
        plugins.write(&format!("{name}.toml"), manifest.as_bytes());
        let dir = plugins.path().display().to_string();
        let mut all = vec!["--plugin-dir", dir.as_str()];
        all.extend_from_slice(args);
        let server = Server::start_with_env(&all, plugins.path(), env);
        Self {
            server,
            task_type: task_type.to_owned(),
            _plugins: plugins,
        }
    }

    /// CreateTask; the resource meta.
    pub async fn create(&self, request: CreateTaskRequest) -> Result<Vec<u8>, tonic::Status> {
        let answer = self.server.tasks().await.create_task(request).await?;
        Ok(answer.into_inner().resource_meta)
    }

    /// GetTask with `connection`.
    pub async fn try_get(
        &self,
        meta: &[u8],
        connection: &Connection,
    ) -> Result<Resource, tonic::Status> {
        let answer = self
            .server
            .tasks()
            .await
            .get_task(GetTaskRequest {
                task_category: category(&self.task_type),
                resource_meta: meta.to_vec(),
                connection: Some(connection.clone()),
                ..Default::default()
            })
            .await?;
        Ok(answer.into_inner().resource.unwrap_or_default())
    }

    /// GetTask with `connection`, which must succeed.
    pub async fn get(&self, meta: &[u8], connection: &Connection) -> Resource {
        self.try_get(meta, connection).await.expect("GetTask")
    }

    /// The phases of `polls` successive GetTask calls.
    pub async fn phases(&self, meta: &[u8], connection: &Connection, polls: usize) -> Vec<Phase> {
        let mut phases = Vec::with_capacity(polls);
        for _ in 0..polls {
            phases.push(self.get(meta, connection).await.phase());
        }
        phases
    }

    /// DeleteTask with `connection`.
    pub async fn delete(&self, meta: &[u8], connection: &Connection) -> Result<(), tonic::Status> {
        self.server
            .tasks()
            .await
            .delete_task(DeleteTaskRequest {
                task_category: category(&self.task_type),
                resource_meta: meta.to_vec(),
                connection: Some(connection.clone()),
            })
            .await
            .map(|_| ())
    }

    /// Asserts that the server never logged the private key `pem` (a line
    /// from its middle, or any PEM key marker) nor a signed JWT (whose
    /// header starts `eyJhbGciOiJSUzI1NiI`).
    pub fn assert_key_never_logged(&self, pem: &str) {
        let key_line = pem.lines().nth(5).expect("a PEM line");
        self.assert_never_logged(&[key_line, "PRIVATE KEY-----", "eyJhbGciOiJSUzI1NiI"]);
    }

    /// Asserts that nothing the server printed (at debug level) contains
    /// any of `secrets`.
    pub fn assert_never_logged(&self, secrets: &[&str]) {
        let output = self.server.output.text();
        assert!(output.contains("DEBUG"), "the server logged at debug");
        for secret in secrets {
            assert!(
                !output.contains(secret),
                "a secret ({} chars) reached the log:\n{output}",
                secret.len()
            );
        }
    }
}

/// A connection with these secrets.
pub fn connection(secrets: &[(&str, &str)]) -> Connection {
    Connection {
        secrets: secrets
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        ..Default::default()
    }
}
