//! The SSH capability against a real OpenSSH server on loopback
//! (`tests/cluster`): commands and files, host keys verified, the
//! allow-list, refused keys, timeouts and caps, one pooled connection for
//! many calls, and no secret in the log.

use flyte_connect::proto::{
    connector::CreateTaskRequest,
    core::{Connection, SimpleType},
};
use flyte_connect_e2e::{
    Server, Workspace,
    cluster::{Cluster, cluster},
    literals::{self, TypedInputs, int, simple, string},
};
use serde_json::{Value, json};

/// An `ssh` task of the faulty component: `op` with `inputs` (strings and
/// integers), against the cluster's sshd, with `connection`.
fn ssh_request(
    cluster: &Cluster,
    op: &str,
    inputs: &[(&'static str, Value)],
    connection: &[(&str, &str)],
) -> CreateTaskRequest {
    let mut typed = vec![
        ("op", string(op), simple(SimpleType::String)),
        ("host", string(&cluster.host), simple(SimpleType::String)),
        ("user", string(&cluster.user), simple(SimpleType::String)),
        (
            "port",
            int(i64::from(cluster.ssh_port)),
            simple(SimpleType::Integer),
        ),
    ];
    for (name, value) in inputs {
        typed.push(match value {
            Value::Number(n) => (
                *name,
                int(n.as_i64().expect("an integer")),
                simple(SimpleType::Integer),
            ),
            other => (
                *name,
                string(other.as_str().expect("a string")),
                simple(SimpleType::String),
            ),
        });
    }
    let mut request = literals::create_request("ssh", &TypedInputs(typed));
    request.connection = Some(Connection {
        secrets: connection
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    });
    request
}

/// The key and the host's known_hosts line, as a connection carries them.
fn credentials(cluster: &Cluster) -> Vec<(&'static str, &str)> {
    vec![
        ("ssh_private_key", cluster.private_key.as_str()),
        ("known_hosts_data", cluster.known_hosts.as_str()),
    ]
}

/// The faulty component with `manifest` as its manifest.
fn serve(manifest: &str, flags: &[&str], env: &[(&str, &str)]) -> (Workspace, Server) {
    let plugins = Workspace::with_components(&["faulty"]);
    plugins.write("faulty.toml", manifest.as_bytes());
    let dir = plugins.path().display().to_string();
    let mut args = vec!["--plugin-dir", dir.as_str()];
    args.extend_from_slice(flags);
    let server = Server::start_with_env(&args, plugins.path(), env);
    (plugins, server)
}

/// `[ssh]` allowing the cluster's sshd by address.
fn allowing(cluster: &Cluster, more: &str) -> String {
    format!(
        "[ssh]\nallowed_hosts = [\"{}:{}\"]\n{more}",
        cluster.host, cluster.ssh_port
    )
}

/// Runs the request; its `{"ok": ...}` or `{"error", "message"}`.
async fn run(server: &Server, request: CreateTaskRequest) -> Value {
    let meta = server
        .tasks()
        .await
        .create_task(request)
        .await
        .expect("the ssh task answers")
        .into_inner()
        .resource_meta;
    serde_json::from_slice(&meta).expect("JSON")
}

/// The sum of `name`'s series whose labels include `labels`.
fn total(server: &Server, name: &str, labels: &[(&str, &str)]) -> f64 {
    server
        .metrics_text()
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn ok(answer: &Value) -> &Value {
    assert!(answer.get("error").is_none(), "{answer}");
    &answer["ok"]
}

fn error(answer: &Value, kind: &str) -> String {
    assert_eq!(answer["error"], kind, "{answer}");
    answer["message"].as_str().expect("a message").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_files_over_ssh() {
    let cluster = cluster();
    let (_plugins, server) = serve(&allowing(cluster, ""), &[], &[]);
    let keys = credentials(cluster);
    let dir = cluster.scratch("files");

    let exec = run(
        &server,
        ssh_request(
            cluster,
            "exec",
            &[("command", json!("echo out; echo err >&2; exit 3"))],
            &keys,
        ),
    )
    .await;
    assert_eq!(
        ok(&exec),
        &json!({"exit_status": 3, "exit_signal": null, "stdout": "out\n", "stderr": "err\n", "truncated": false})
    );
    // Standard input reaches the command; the shell sees sshd's SLURM_CONF.
    let cat = run(
        &server,
        ssh_request(
            cluster,
            "exec",
            &[
                ("command", json!("cat; echo $SLURM_CONF")),
                ("stdin", json!("piped\n")),
            ],
            &keys,
        ),
    )
    .await;
    assert_eq!(
        ok(&cat)["stdout"],
        format!("piped\n{}\n", cluster.slurm_conf)
    );

    let path = format!("{dir}/job.sbatch");
    let written = run(
        &server,
        ssh_request(
            cluster,
            "write",
            &[
                ("path", json!(path)),
                ("contents", json!("one\ntwo\nthree\nfour\n")),
                ("mode", json!(0o700)),
            ],
            &keys,
        ),
    )
    .await;
    assert_eq!(ok(&written), &json!({"written": 19}));
    use std::os::unix::fs::PermissionsExt;
    let on_disk = std::fs::metadata(&path).expect("the file was written");
    assert_eq!(on_disk.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "one\ntwo\nthree\nfour\n"
    );

    let stat = run(
        &server,
        ssh_request(cluster, "stat", &[("path", json!(path))], &keys),
    )
    .await;
    assert_eq!(ok(&stat)["size"], 19);
    assert_eq!(ok(&stat)["mode"], 0o700);
    assert_eq!(ok(&stat)["is_directory"], false);
    let read = run(
        &server,
        ssh_request(
            cluster,
            "read",
            &[
                ("path", json!(path)),
                ("offset", json!(4)),
                ("length", json!(8)),
            ],
            &keys,
        ),
    )
    .await;
    assert_eq!(ok(&read)["text"], "two\nthre");
    let tail = run(
        &server,
        ssh_request(
            cluster,
            "tail",
            &[("path", json!(path)), ("lines", json!(2))],
            &keys,
        ),
    )
    .await;
    assert_eq!(ok(&tail)["text"], "three\nfour\n");
    std::fs::create_dir(format!("{dir}/outputs")).expect("a folder");
    let list = run(
        &server,
        ssh_request(cluster, "list", &[("path", json!(dir))], &keys),
    )
    .await;
    assert_eq!(
        ok(&list),
        &json!([
            {"name": "job.sbatch", "size": 19, "is_directory": false},
            {"name": "outputs", "size": ok(&list)[1]["size"], "is_directory": true},
        ])
    );

    // A path with nothing there: no info, and an error naming it.
    let missing = format!("{dir}/missing.out");
    let stat = run(
        &server,
        ssh_request(cluster, "stat", &[("path", json!(missing))], &keys),
    )
    .await;
    assert_eq!(ok(&stat), &Value::Null);
    let read = run(
        &server,
        ssh_request(cluster, "read", &[("path", json!(missing))], &keys),
    )
    .await;
    let message = error(&read, "remote");
    assert!(
        message.contains(&missing) && message.contains("no such file"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_are_verified_unless_the_manifest_says_otherwise() {
    let cluster = cluster();
    let key = [("ssh_private_key", cluster.private_key.as_str())];
    let (_plugins, server) = serve(&allowing(cluster, ""), &[], &[]);
    // No known hosts: refused, naming the host and the key's fingerprint.
    let unknown = run(&server, ssh_request(cluster, "connect", &[], &key)).await;
    let message = error(&unknown, "host_key");
    assert!(
        message.contains(&format!("{}:{}", cluster.host, cluster.ssh_port))
            && message.contains("is not known")
            && message.contains(&cluster.host_key_fingerprint),
        "{message}"
    );
    // Another key on record for the host: a mismatch.
    let other = format!(
        "[{}]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrogWY4ScLTVmjdjXVjlMqXAd3KDZphXCJbS2Hb/uYi",
        cluster.host, cluster.ssh_port
    );
    let mismatch = run(
        &server,
        ssh_request(
            cluster,
            "connect",
            &[],
            &[
                ("ssh_private_key", &cluster.private_key),
                ("known_hosts_data", &other),
            ],
        ),
    )
    .await;
    let message = error(&mismatch, "host_key");
    assert!(
        message.contains("does not match") && message.contains(&cluster.host_key_fingerprint),
        "{message}"
    );
    let denied = total(
        &server,
        "flyte_connector_ssh_denied_total",
        &[("reason", "host_key")],
    );
    assert_eq!(denied, 2.0);
    drop(server);

    // The manifest's known hosts, inline or from a file the operator allows.
    let secrets = tempfile::tempdir().expect("a Secret volume");
    std::fs::write(secrets.path().join("known_hosts"), &cluster.known_hosts).expect("write");
    let secrets_dir = secrets.path().display().to_string();
    for section in [
        format!("known_hosts = [\"{}\"]\n", cluster.known_hosts),
        format!(
            "known_hosts_file = \"{}\"\n",
            secrets.path().join("known_hosts").display()
        ),
        "skip_host_key_verification = true\n".to_owned(),
    ] {
        let (_plugins, server) = serve(
            &allowing(cluster, &section),
            &["--credentials-dir", &secrets_dir],
            &[],
        );
        let connected = run(&server, ssh_request(cluster, "connect", &[], &key)).await;
        assert_eq!(
            ok(&connected),
            &json!({"connected": format!("{}:{}", cluster.host, cluster.ssh_port)}),
            "{section}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_hosts_the_manifest_allows_are_reached() {
    let cluster = cluster();
    let keys = credentials(cluster);
    // No [ssh] section at all.
    let (_plugins, server) = serve("", &[], &[]);
    let none = run(&server, ssh_request(cluster, "connect", &[], &keys)).await;
    assert!(error(&none, "not_allowed").contains("no [ssh] section"));
    drop(server);
    // Another port only.
    let (_plugins, server) = serve(
        &format!("[ssh]\nallowed_hosts = [\"{}:1\"]\n", cluster.host),
        &[],
        &[],
    );
    let port = run(&server, ssh_request(cluster, "connect", &[], &keys)).await;
    assert!(error(&port, "not_allowed").contains("ssh.allowed_hosts"));
    drop(server);
    // A wildcard admits the name, never a loopback address.
    let (_plugins, server) = serve("[ssh]\nallowed_hosts = [\"*:*\"]\n", &[], &[]);
    let wildcard = run(&server, ssh_request(cluster, "connect", &[], &keys)).await;
    let message = error(&wildcard, "not_allowed");
    assert!(message.contains("loopback"), "{message}");
    assert_eq!(
        total(
            &server,
            "flyte_connector_ssh_denied_total",
            &[("reason", "address")]
        ),
        1.0
    );
    assert_eq!(
        total(&server, "flyte_connector_ssh_connections_total", &[]),
        0.0,
        "nothing was connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_refuses_or_that_cannot_be_read_fails_the_call() {
    let cluster = cluster();
    let (_plugins, server) = serve(&allowing(cluster, ""), &[], &[]);
    let other = tempfile::tempdir().expect("a folder");
    let key_path = other.path().join("other_key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key_path)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let other_key = std::fs::read_to_string(&key_path).expect("the key");
    let refused = run(
        &server,
        ssh_request(
            cluster,
            "connect",
            &[],
            &[
                ("ssh_private_key", &other_key),
                ("known_hosts_data", &cluster.known_hosts),
            ],
        ),
    )
    .await;
    let message = error(&refused, "authentication");
    assert!(
        message.contains("refused the key") && message.contains(&format!("user {}", cluster.user)),
        "{message}"
    );
    let garbled = run(
        &server,
        ssh_request(
            cluster,
            "connect",
            &[],
            &[
                ("ssh_private_key", "not a key"),
                ("known_hosts_data", &cluster.known_hosts),
            ],
        ),
    )
    .await;
    assert!(error(&garbled, "invalid").contains("cannot be read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_end_at_their_timeout_and_outputs_at_their_cap() {
    let cluster = cluster();
    let (_plugins, server) = serve(&allowing(cluster, ""), &[], &[]);
    let keys = credentials(cluster);
    let started = std::time::Instant::now();
    let slow = run(
        &server,
        ssh_request(
            cluster,
            "exec",
            &[("command", json!("sleep 30")), ("timeout_ms", json!(300))],
            &keys,
        ),
    )
    .await;
    assert!(error(&slow, "timeout").contains("ran past its 0.3 s timeout"));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let loud = run(
        &server,
        ssh_request(
            cluster,
            "exec",
            &[
                ("command", json!("yes x | head -c 100000")),
                ("max_output_bytes", json!(1000)),
            ],
            &keys,
        ),
    )
    .await;
    assert_eq!(ok(&loud)["stdout"].as_str().map(str::len), Some(1000));
    assert_eq!(ok(&loud)["truncated"], true);
    assert_eq!(ok(&loud)["exit_status"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_share_one_connection_until_it_idles_out() {
    let cluster = cluster();
    let (_plugins, server) = serve(
        &allowing(cluster, ""),
        &["--ssh-idle-timeout", "1"],
        &[("RUST_LOG", "debug")],
    );
    let keys = credentials(cluster);
    for _ in 0..20 {
        let answer = run(
            &server,
            ssh_request(cluster, "exec", &[("command", json!("true"))], &keys),
        )
        .await;
        assert_eq!(ok(&answer)["exit_status"], 0);
    }
    let connections = |server: &Server| total(server, "flyte_connector_ssh_connections_total", &[]);
    assert_eq!(connections(&server), 1.0, "20 calls, one connection");
    let ops = total(
        &server,
        "flyte_connector_ssh_operations_total",
        &[("operation", "exec"), ("outcome", "ok")],
    );
    assert_eq!(ops, 20.0);
    // Idle past the timeout: closed, and the next call connects again.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let answer = run(
        &server,
        ssh_request(cluster, "exec", &[("command", json!("true"))], &keys),
    )
    .await;
    assert_eq!(ok(&answer)["exit_status"], 0);
    assert_eq!(connections(&server), 2.0);
    // Neither the key nor the known hosts reached the debug log.
    let output = server.output.text();
    let key_body: String = cluster
        .private_key
        .lines()
        .nth(1)
        .expect("a key line")
        .to_owned();
    assert!(!output.contains(&key_body), "the private key was logged");
    let host_key = cluster
        .known_hosts
        .split_whitespace()
        .nth(2)
        .expect("a key");
    let leaked: Vec<&str> = output.lines().filter(|l| l.contains(host_key)).collect();
    assert!(leaked.is_empty(), "the known hosts were logged: {leaked:?}");
}

/// A storage operation of the faulty component with output prefix
/// `prefix`: `op` (`exists` or `copy`) with `inputs`.
async fn storage(
    server: &Server,
    cluster: &Cluster,
    prefix: &str,
    op: &str,
    inputs: &[(&'static str, Value)],
) -> Value {
    let mut request = ssh_request(cluster, op, inputs, &credentials(cluster));
    request.output_prefix = prefix.to_owned();
    run(server, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_reaches_only_the_tasks_output_prefix_under_the_manifests_roots() {
    let cluster = cluster();
    let root = cluster.scratch("storage-rules");
    let (_plugins, without) = serve(&allowing(cluster, ""), &[], &[]);
    let prefix = format!("file://{root}/run/a0");
    let answer = storage(
        &without,
        cluster,
        &prefix,
        "exists",
        &[("uri", json!(format!("{prefix}/x")))],
    )
    .await;
    assert!(
        error(&answer, "not_allowed").contains("its manifest has no [storage] section"),
        "{answer}"
    );

    let (_plugins, server) = serve(
        &allowing(cluster, &format!("[storage]\nlocal_roots = [\"{root}\"]\n")),
        &[],
        &[],
    );
    let exists = |uri: String| {
        let server = &server;
        let prefix = prefix.clone();
        async move { storage(server, cluster, &prefix, "exists", &[("uri", json!(uri))]).await }
    };
    assert_eq!(ok(&exists(format!("{prefix}/model")).await), &json!(false));
    std::fs::create_dir_all(format!("{root}/run/a0/shards")).expect("a folder");
    std::fs::write(format!("{root}/run/a0/shards/one"), b"1").expect("a file");
    assert_eq!(
        ok(&exists(format!("{prefix}/shards")).await),
        &json!(true),
        "a folder of objects"
    );
    assert_eq!(
        ok(&exists(format!("{prefix}/shards/one")).await),
        &json!(true)
    );
    for (uri, why) in [
        (
            format!("file://{root}/run/a01/x"),
            "is not under the task's output prefix",
        ),
        (
            format!("file://{root}/other"),
            "is not under the task's output prefix",
        ),
        (
            "s3://bucket/run/a0/x".to_owned(),
            "is not under the task's output prefix",
        ),
    ] {
        let answer = exists(uri.clone()).await;
        assert!(
            error(&answer, "not_allowed").contains(why),
            "{uri}: {answer}"
        );
    }
    let answer = exists(format!("{prefix}/../escape")).await;
    assert!(
        error(&answer, "invalid").contains("`.` or `..`"),
        "{answer}"
    );
    // A prefix outside the manifest's roots reaches nothing either.
    let answer = storage(
        &server,
        cluster,
        "file:///etc",
        "exists",
        &[("uri", json!("file:///etc/passwd"))],
    )
    .await;
    assert!(
        error(&answer, "not_allowed").contains("outside the plugin's [storage] local_roots"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_joined_then_done_and_a_complete_destination_is_not_moved_again() {
    let cluster = cluster();
    let root = cluster.scratch("storage-copy");
    let source = format!("{}/source.bin", cluster.scratch("storage-source"));
    std::fs::write(&source, vec![7u8; 6 << 20]).expect("the source");
    let (_plugins, server) = serve(
        &allowing(cluster, &format!("[storage]\nlocal_roots = [\"{root}\"]\n")),
        &[],
        &[],
    );
    let prefix = format!("file://{root}/run/a0");
    let uri = format!("{prefix}/model");
    let copy = |path: &str, max: Option<i64>| {
        let mut inputs = vec![("path", json!(path)), ("uri", json!(uri.clone()))];
        if let Some(max) = max {
            inputs.push(("max_bytes", json!(max)));
        }
        let server = &server;
        let prefix = prefix.clone();
        async move { storage(server, cluster, &prefix, "copy", &inputs).await }
    };
    assert_eq!(ok(&copy("/nowhere/at/all", None).await), &json!("missing"));
    assert_eq!(
        ok(&copy(&source, Some(1 << 20)).await),
        &json!({"too_large": 6 << 20})
    );
    let first = copy(&source, None).await;
    assert!(
        ok(&first).get("moving").is_some(),
        "the first call starts it: {first}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let state = copy(&source, None).await;
        if ok(&state) == &json!({"done": 6 << 20}) {
            break;
        }
        assert!(ok(&state).get("moving").is_some(), "{state}");
        assert!(std::time::Instant::now() < deadline, "not done: {state}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let moved = std::fs::read(format!("{root}/run/a0/model")).expect("the object");
    assert!(
        moved == vec![7u8; 6 << 20],
        "the object is the source, byte for byte"
    );
    // Complete already: done at once, nothing moved again.
    assert_eq!(ok(&copy(&source, None).await), &json!({"done": 6 << 20}));
    assert_eq!(
        total(
            &server,
            "flyte_connector_storage_transfers_total",
            &[("event", "started")]
        ),
        1.0
    );
}
