//! What a plugin's manifest may take from the pod: files only under the
//! credential folders the operator names (`--credentials-dir`), after
//! symbolic links are resolved, so a Kubernetes Secret volume works and a
//! link out of it does not; environment variables only with a prefix the
//! operator names (`--credentials-env-prefix`), never the proxy variables.
//! A manifest asking for more keeps its plugin out with a warning naming
//! the key and the rule.

use std::path::Path;

use flyte_connect::proto::{
    connector::{CreateTaskRequest, GetTaskLogsRequest, get_task_logs_response},
    core::Connection,
};
use flyte_connect_e2e::{Server, Workspace, literals};
use serde_json::Value;
use tokio_stream::StreamExt;

/// A Kubernetes Secret volume in `dir`: each key a link to `..data/KEY`,
/// `..data` a link to a timestamped folder holding the files.
fn secret_volume(dir: &Path, keys: &[(&str, &str)]) {
    let data = dir.join("..2026_12_07_02_00_00.000000001");
    std::fs::create_dir_all(&data).expect("the volume's data folder");
    for (key, value) in keys {
        std::fs::write(data.join(key), value).expect("a key");
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).expect("a key's link");
    }
    std::os::unix::fs::symlink(data.file_name().expect("a folder name"), dir.join("..data"))
        .expect("the ..data link");
}

/// The faulty component with `credentials` as its `[credentials]` section,
/// served with `flags` and the server's environment `env`.
fn serve(credentials: &str, flags: &[&str], env: &[(&str, &str)]) -> (Workspace, Server) {
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write(
        "faulty.toml",
        format!("[credentials]\n{credentials}").as_bytes(),
    );
    let dir = plugins.path().display().to_string();
    let mut args = vec!["--plugin-dir", dir.as_str()];
    args.extend_from_slice(flags);
    let server = Server::start_with_env(&args, plugins.path(), env);
    (plugins, server)
}

/// The connection map an `inspect` task sees.
async fn connection_seen(server: &Server) -> Value {
    let mut request: CreateTaskRequest =
        literals::create_request("inspect", &literals::TypedInputs(vec![]));
    request.connection = Some(Connection::default());
    let meta = server
        .tasks()
        .await
        .create_task(request)
        .await
        .expect("inspect")
        .into_inner()
        .resource_meta;
    let seen: Value = serde_json::from_slice(&meta).expect("JSON");
    seen["connection"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_reads_only_the_credentials_the_operator_allows() {
    let pod = tempfile::tempdir().expect("the pod's files");
    let secrets = pod.path().join("secrets");
    std::fs::create_dir(&secrets).expect("the Secret volume");
    secret_volume(
        &secrets,
        &[("snowflake_private_key", "the-snowflake-key\n")],
    );
    // Another connector's key and the pod's service-account token, outside.
    let outside = pod.path().join("serviceaccount");
    std::fs::create_dir(&outside).expect("another folder");
    std::fs::write(outside.join("token"), "the-pods-kubernetes-token").expect("a token");
    std::os::unix::fs::symlink(outside.join("token"), secrets.join("escape")).expect("a link out");
    let secrets_dir = secrets.display().to_string();
    let flags = [
        "--credentials-dir",
        secrets_dir.as_str(),
        "--credentials-env-prefix",
        "POD_",
    ];
    let env = [
        ("POD_WAREHOUSE", "analytics"),
        ("HTTPS_PROXY", "http://proxy-user:proxy-secret@127.0.0.1:9"),
        ("OTHER_SECRET", "not-for-connectors"),
    ];

    // What the operator allows: a key of the Secret volume, through its
    // links, and a variable with an allowed prefix.
    let (_plugins, server) = serve(
        &format!(
            "key = {{ file = {:?} }}\nwarehouse = {{ env = \"POD_WAREHOUSE\" }}\n",
            secrets.join("snowflake_private_key").display()
        ),
        &flags,
        &env,
    );
    let seen = connection_seen(&server).await;
    assert_eq!(seen["key"], "the-snowflake-key", "{seen}");
    assert_eq!(seen["warehouse"], "analytics", "{seen}");

    // Everything else keeps the plugin out, the key and the rule named.
    let token = outside.join("token").display().to_string();
    for (credentials, key, rule) in [
        (
            format!("a = {{ file = {token:?} }}"),
            "credentials.a",
            "--credentials-dir",
        ),
        (
            format!(
                "b = {{ file = {:?} }}",
                format!("{secrets_dir}/../serviceaccount/token")
            ),
            "credentials.b",
            "--credentials-dir",
        ),
        (
            format!("c = {{ file = {:?} }}", secrets.join("escape").display()),
            "credentials.c",
            "which leads to",
        ),
        (
            "d = { env = \"HTTPS_PROXY\" }".to_owned(),
            "credentials.d",
            "proxy",
        ),
        (
            "e = { env = \"OTHER_SECRET\" }".to_owned(),
            "credentials.e",
            "--credentials-env-prefix",
        ),
    ] {
        let (_plugins, server) = serve(&format!("{credentials}\n"), &flags, &env);
        assert!(
            server.connector_names().await.is_empty(),
            "{credentials}: served"
        );
        let output = server.output.text();
        assert!(
            output
                .lines()
                .any(|l| l.contains("WARN") && l.contains(key) && l.contains(rule)),
            "{credentials}: no warning naming {key} and {rule}:\n{output}"
        );
        for secret in [
            "the-pods-kubernetes-token",
            "proxy-secret",
            "not-for-connectors",
        ] {
            assert!(!output.contains(secret), "{credentials}: {secret} logged");
        }
    }

    // The same rule for the files of [[http.tls]].
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write(
        "faulty.toml",
        format!("[[http.tls]]\nclient_cert_file = {token:?}\nclient_key_file = {token:?}\n")
            .as_bytes(),
    );
    let dir = plugins.path().display().to_string();
    let server = Server::start(
        &["--plugin-dir", &dir, "--credentials-dir", &secrets_dir],
        plugins.path(),
    );
    assert!(server.connector_names().await.is_empty());
    assert!(
        server
            .output
            .text()
            .contains("http.tls[0].client_cert_file"),
        "{}",
        server.output.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_credentials_reach_the_logs_call_too() {
    let secrets = tempfile::tempdir().expect("a Secret volume");
    std::fs::write(secrets.path().join("ssh_private_key"), "k").expect("a key");
    let secrets_dir = secrets.path().display().to_string();
    let (_plugins, server) = serve(
        &format!(
            "ssh_private_key = {{ file = {:?} }}\n",
            secrets.path().join("ssh_private_key").display()
        ),
        &["--credentials-dir", &secrets_dir],
        &[],
    );
    // GetTaskLogs carries no connection: the pod's fills it in.
    let parts: Vec<_> = server
        .tasks()
        .await
        .get_task_logs(GetTaskLogsRequest {
            task_category: literals::category("inspect"),
            resource_meta: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .expect("logs")
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    let lines: Vec<String> = parts
        .into_iter()
        .filter_map(|part| match part.expect("a part").part {
            Some(get_task_logs_response::Part::Body(body)) => {
                Some(body.lines.into_iter().map(|l| l.message))
            }
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(lines, ["ssh_private_key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_only_etc_secrets_and_no_variable_is_readable() {
    let (_plugins, server) = serve("home = { env = \"HOME\" }\n", &[], &[("HOME", "/root")]);
    assert!(server.connector_names().await.is_empty());
    let output = server.output.text();
    assert!(
        output.contains("credentials.home") && output.contains("none given"),
        "{output}"
    );
    let (_plugins, server) = serve("k = { file = \"/etc/hostname\" }\n", &[], &[]);
    assert!(server.connector_names().await.is_empty());
    assert!(
        server.output.text().contains("/etc/secrets"),
        "{}",
        server.output.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_with_the_pods_credentials_says_every_task_shares_its_instances() {
    let secrets = tempfile::tempdir().expect("a Secret volume");
    std::fs::write(secrets.path().join("token"), "t").expect("a key");
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write(
        "faulty.toml",
        format!(
            "instance_reuse = \"connection\"\n[credentials]\ntoken = {{ file = {:?} }}\n",
            secrets.path().join("token").display()
        )
        .as_bytes(),
    );
    let dir = plugins.path().display().to_string();
    let secrets_dir = secrets.path().display().to_string();
    let server = Server::start(
        &["--plugin-dir", &dir, "--credentials-dir", &secrets_dir],
        plugins.path(),
    );
    assert_eq!(server.connector_names().await, ["Faulty Connector"]);
    let output = server.output.text();
    assert!(
        output.lines().any(|l| l.contains("WARN")
            && l.contains("instance_reuse")
            && l.contains("[credentials]")
            && l.contains("share")),
        "{output}"
    );
}
