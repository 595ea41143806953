//! The Slurm connector (`example-connectors/slurm`) against a real
//! one-node Slurm cluster behind a real OpenSSH server on loopback
//! (`tests/cluster`): script and container tasks submitted with sbatch,
//! polled to their end, cancelled, their logs read; the Python
//! connector's meta and messages; the deployment's settings winning over
//! the task's; Slurm down; bad tasks refused.

use std::time::{Duration, Instant};

use flyte_connect::proto::{
    connector::{CreateTaskRequest, GetTaskLogsRequest, Resource, get_task_logs_response},
    core::{
        Connection, Container, Identifier, KeyValuePair, SimpleType, TaskTemplate,
        task_execution::Phase, task_template,
    },
};
use flyte_connect_e2e::{
    Workspace,
    cluster::{Cluster, cluster},
    hosted::{HostedConnector, connection},
    literals::{self, TypedInputs, float, int, simple, string},
};
use serde_json::{Value, json};
use tokio::sync::RwLock;
use tokio_stream::StreamExt as _;
use tonic::Code;

mod outputs;

/// Held shared by every test here, and exclusively by the one that stops
/// the controller.
static CONTROLLER: RwLock<()> = RwLock::const_new(());

/// The Slurm connector allowed to reach the cluster's sshd; tasks bring
/// the key and the host's known_hosts line in their connection.
fn serve(cluster: &Cluster) -> HostedConnector {
    serve_with(cluster, "", &[])
}

/// Like [`serve`], with more of the manifest and the server's environment.
fn serve_with(cluster: &Cluster, more: &str, env: &[(&str, &str)]) -> HostedConnector {
    let manifest = format!(
        "[ssh]\nallowed_hosts = [\"{}:{}\"]\n{more}",
        cluster.host, cluster.ssh_port
    );
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "debug"));
    HostedConnector::start_with_env("slurm", "slurm", &manifest, &env)
}

/// The Slurm connector as a deployment configures it: the cluster named
/// in `[env]`, its host key in `[ssh]`, the key read from the pod's
/// secrets folder.
fn serve_deployed(cluster: &Cluster) -> (Workspace, HostedConnector) {
    let secrets = Workspace::with_components(&[]);
    secrets.write("ssh_private_key", cluster.private_key.as_bytes());
    let manifest = format!(
        "[env]\nFLYTE_SLURM_HOST = \"{host}\"\nFLYTE_SLURM_PORT = \"{port}\"\n\
         FLYTE_SLURM_USERNAME = \"{user}\"\nFLYTE_SLURM_WORKING_DIR = \"{dir}\"\n\
         [ssh]\nallowed_hosts = [\"{host}:{port}\"]\nknown_hosts = [\"{known}\"]\n\
         [credentials]\nssh_private_key = {{ file = \"{key}\" }}\n",
        host = cluster.host,
        port = cluster.ssh_port,
        user = cluster.user,
        dir = cluster.scratch("deployed"),
        known = cluster.known_hosts.trim(),
        key = secrets.path().join("ssh_private_key").display(),
    );
    let credentials = secrets.path().display().to_string();
    let slurm = HostedConnector::start_with_args(
        "slurm",
        "slurm",
        &manifest,
        &["--credentials-dir", &credentials],
        &[("RUST_LOG", "debug")],
    );
    (secrets, slurm)
}

/// The key and the host's known_hosts line, as Flyte resolves the task's
/// secrets into the connection.
fn keys(cluster: &Cluster) -> Connection {
    connection(&[
        ("ssh_private_key", &cluster.private_key),
        ("known_hosts_data", &cluster.known_hosts),
    ])
}

/// `custom` as `flyteplugins-slurm` writes it, reaching the cluster, with
/// `more` merged in.
fn custom(cluster: &Cluster, more: Value) -> Value {
    let mut custom = json!({
        "connection": {"host": cluster.host, "username": cluster.user,
                       "port": f64::from(cluster.ssh_port)},
        "sbatch": {"partition": "debug", "time_limit": "5:00"},
        "sbatch_options": {},
        "container": {"runtime": "pyxis", "args": [], "image": null, "mounts": [],
                      "workdir": null, "srun_args": []},
        "env": {},
        "secrets": {"ssh_private_key": "slurm-key", "known_hosts_data": "slurm-hosts"},
    });
    if let (Some(base), Value::Object(more)) = (custom.as_object_mut(), more) {
        base.extend(more);
    }
    custom
}

/// A task of `task_type` named `tests.slurm.NAME` with `custom` and
/// `inputs`, its connection carrying the key.
fn task(
    cluster: &Cluster,
    task_type: &str,
    name: &str,
    custom: Value,
    inputs: &TypedInputs,
) -> CreateTaskRequest {
    let mut request = literals::create_request(task_type, inputs);
    let template = request.template.get_or_insert_with(TaskTemplate::default);
    template.id = Some(Identifier {
        name: format!("tests.slurm.{name}"),
        ..Default::default()
    });
    template.custom = serde_json::from_value(custom).ok();
    request.connection = Some(keys(cluster));
    request
}

/// A `slurm_script` task running `script`.
fn script_task(cluster: &Cluster, name: &str, script: &str) -> CreateTaskRequest {
    task(
        cluster,
        "slurm_script",
        name,
        custom(cluster, json!({ "script": script })),
        &TypedInputs(vec![]),
    )
}

/// Polls until the task ends; its last resource.
async fn until_done(slurm: &HostedConnector, meta: &[u8], connection: &Connection) -> Resource {
    until(slurm, meta, connection, |phase| {
        matches!(
            phase,
            Phase::Succeeded | Phase::Failed | Phase::Aborted | Phase::RetryableFailed
        )
    })
    .await
}

/// Polls until the task's phase satisfies `wanted`; its resource then.
async fn until(
    slurm: &HostedConnector,
    meta: &[u8],
    connection: &Connection,
    wanted: impl Fn(Phase) -> bool,
) -> Resource {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let resource = slurm.get(meta, connection).await;
        if wanted(resource.phase()) {
            return resource;
        }
        assert!(
            Instant::now() < deadline,
            "still {:?}: {}",
            resource.phase(),
            resource.message
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn meta_json(meta: &[u8]) -> Value {
    serde_json::from_slice(meta).expect("the meta is JSON")
}

fn field<'a>(meta: &'a Value, name: &str) -> &'a str {
    meta[name].as_str().expect("a string field")
}

/// The log lines GetTaskLogs answers (the request carries no connection:
/// the pod's credentials fill it in).
async fn logs(slurm: &HostedConnector, meta: &[u8]) -> Vec<String> {
    let parts: Vec<_> = slurm
        .server
        .tasks()
        .await
        .get_task_logs(GetTaskLogsRequest {
            task_category: literals::category("slurm"),
            resource_meta: meta.to_vec(),
            ..Default::default()
        })
        .await
        .expect("GetTaskLogs")
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    parts
        .into_iter()
        .filter_map(|part| match part.expect("a part").part {
            Some(get_task_logs_response::Part::Body(body)) => {
                Some(body.lines.into_iter().map(|l| l.message))
            }
            _ => None,
        })
        .flatten()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_connector_runs_a_script_task_with_its_inputs_and_reads_its_logs() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let (_secrets, slurm) = serve_deployed(cluster);
    let inputs = TypedInputs(vec![
        ("epochs", int(3), simple(SimpleType::Integer)),
        ("lr", float(0.001), simple(SimpleType::Float)),
        ("name", string("a b"), simple(SimpleType::String)),
    ]);
    let script = "#!/bin/bash\n#SBATCH --comment=from-the-script\n\n\
                  echo \"epochs=$FLYTE_INPUT_EPOCHS lr=$FLYTE_INPUT_LR name=$FLYTE_INPUT_NAME\"\n\
                  echo \"from=$FROM_TASK\"\necho a-warning >&2\n";
    // The task names another cluster and brings no key: the deployment's
    // settings and the pod's key win.
    let custom = json!({
        "connection": {"host": "login.hpc.invalid", "username": "nobody"},
        "sbatch": {"partition": "debug"},
        "env": {"FROM_TASK": "yes"},
        "script": script,
    });
    let mut request = task(cluster, "slurm_script", "train", custom, &inputs);
    request.connection = None;
    let meta = slurm.create(request).await.expect("CreateTask");

    // The Python connector's meta, in its layout.
    let text = String::from_utf8(meta.clone()).expect("UTF-8");
    assert!(text.starts_with("{\"job_id\": \""), "{text}");
    assert!(
        text.ends_with("\"skip_host_key_verification\": false, \"declared_outputs\": {}}"),
        "{text}"
    );
    let parsed = meta_json(&meta);
    let job_name = field(&parsed, "job_name");
    assert!(
        job_name.starts_with("flyte-train-") && job_name.len() == 20,
        "{job_name}"
    );
    let jobs = cluster.scratch("deployed");
    assert_eq!(parsed["host"], cluster.host);
    assert_eq!(parsed["username"], cluster.user);
    assert_eq!(parsed["port"], cluster.ssh_port);
    assert_eq!(parsed["stdout_path"], format!("{jobs}/{job_name}.out"));

    // The script on the cluster: mode 0700, the user's directive hoisted.
    let script_path = format!("{jobs}/{job_name}.sbatch");
    assert_eq!(
        cluster.ssh(&format!("stat -c %a {script_path}")).trim(),
        "700"
    );
    let written = cluster.ssh(&format!("cat {script_path}"));
    assert!(
        written.starts_with(&format!(
            "#!/bin/bash\n#SBATCH --comment=from-the-script\n#SBATCH --job-name={job_name}\n"
        )),
        "{written}"
    );

    let empty = Connection::default();
    let done = until_done(&slurm, &meta, &empty).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    let job_id = field(&parsed, "job_id");
    assert_eq!(
        done.message,
        format!(
            "Slurm job {job_id} is COMPLETED\nJob files on {user}@{host}: {jobs}/{job_name}.out \
             (stdout), {jobs}/{job_name}.err (stderr)",
            user = cluster.user,
            host = cluster.host
        )
    );
    assert_eq!(
        logs(&slurm, &meta).await,
        [
            format!("--- stdout: {jobs}/{job_name}.out ---"),
            "epochs=3 lr=0.001 name=a b".to_owned(),
            "from=yes".to_owned(),
            format!("--- stderr: {jobs}/{job_name}.err ---"),
            "a-warning".to_owned(),
        ]
    );
    let key_line = cluster.private_key.lines().nth(2).expect("a key line");
    slurm.assert_never_logged(&[key_line, "PRIVATE KEY-----"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_fails_with_the_tail_of_its_stderr() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let slurm = serve(cluster);
    let script = "for i in $(seq 1 40); do echo \"line $i\" >&2; done\nexit 3\n";
    let meta = slurm
        .create(script_task(cluster, "fails", script))
        .await
        .expect("CreateTask");
    let done = until_done(&slurm, &meta, &keys(cluster)).await;
    assert_eq!(done.phase(), Phase::Failed, "{}", done.message);
    let parsed = meta_json(&meta);
    let (job_id, stderr) = (field(&parsed, "job_id"), field(&parsed, "stderr_path"));
    let tail: Vec<String> = (11..=40).map(|i| format!("line {i}")).collect();
    assert!(
        done.message
            .starts_with(&format!("Slurm job {job_id} is FAILED")),
        "{}",
        done.message
    );
    assert!(
        done.message.contains(&format!(
            "{stderr} (stderr)\n--- stderr (last 30 lines) ---\n{}",
            tail.join("\n")
        )),
        "{}",
        done.message
    );
    assert!(done.message.ends_with("line 40"), "{}", done.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_says_how_to_attach_and_is_cancelled_once_or_twice() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let slurm = serve(cluster);
    let meta = slurm
        .create(script_task(cluster, "long", "echo started\nsleep 300\n"))
        .await
        .expect("CreateTask");
    let parsed = meta_json(&meta);
    let job_id = field(&parsed, "job_id");
    let running = until(&slurm, &meta, &keys(cluster), |p| p == Phase::Running).await;
    assert!(
        running.message.ends_with(&format!(
            "\nAttach to the running job: ssh {}@{} 'srun --jobid={job_id} --overlap --pty bash'",
            cluster.user, cluster.host
        )),
        "{}",
        running.message
    );
    slurm
        .delete(&meta, &keys(cluster))
        .await
        .expect("DeleteTask");
    let done = until_done(&slurm, &meta, &keys(cluster)).await;
    assert_eq!(done.phase(), Phase::Aborted, "{}", done.message);
    assert!(
        done.message
            .starts_with(&format!("Slurm job {job_id} is CANCELLED")),
        "{}",
        done.message
    );
    slurm
        .delete(&meta, &keys(cluster))
        .await
        .expect("cancelling again is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_task_is_run_with_srun_through_pyxis() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let slurm = serve(cluster);
    let mut request = task(
        cluster,
        "slurm",
        "containerised",
        custom(
            cluster,
            json!({"modules": [], "sbatch_options": {"exclusive": true, "nodes": 1.0}}),
        ),
        &TypedInputs(vec![]),
    );
    if let Some(template) = request.template.as_mut() {
        template.target = Some(task_template::Target::Container(Container {
            image: "ghcr.io/org/img:tag".into(),
            args: ["a0", "--inputs", "{{.input}}"].map(String::from).to_vec(),
            env: vec![KeyValuePair {
                key: "IMAGE_ENV".into(),
                value: "x y".into(),
            }],
            ..Default::default()
        }));
    }
    let meta = slurm.create(request).await.expect("CreateTask");
    let parsed = meta_json(&meta);
    let job_name = field(&parsed, "job_name");
    let home = cluster.ssh("pwd");
    let written = cluster.ssh(&format!(
        "cat {}/.flyte/jobs/{job_name}.sbatch",
        home.trim()
    ));
    assert!(
        written.contains("\n#SBATCH --time=5:00\n#SBATCH --exclusive\n#SBATCH --nodes=1\n")
            || written.contains("\n#SBATCH --nodes=1\n"),
        "{written}"
    );
    assert!(
        written.contains(
            "\nset -euo pipefail\nexport IMAGE_ENV='x y'\n\nsrun --nodes=1 --ntasks=1 \
             '--container-image=ghcr.io#org/img:tag' bash -c"
        ),
        "{written}"
    );
    assert!(
        written.ends_with(" -- a0 --inputs '{{.input}}'\n"),
        "{written}"
    );
    // This cluster has no Pyxis: srun refuses the option, and the task
    // fails with what srun said.
    let done = until_done(&slurm, &meta, &keys(cluster)).await;
    assert_eq!(done.phase(), Phase::Failed, "{}", done.message);
    assert!(done.message.contains("container-image"), "{}", done.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tasks_are_refused_with_what_to_fix() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let slurm = serve(cluster);
    let refused = |request: CreateTaskRequest| {
        let slurm = &slurm;
        async move { slurm.create(request).await.expect_err("refused") }
    };

    let mut no_host = script_task(cluster, "t", "true\n");
    if let Some(template) = no_host.template.as_mut() {
        template.custom = serde_json::from_value(json!({"script": "true"})).ok();
    }
    let status = refused(no_host).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("Missing Slurm connection details."),
        "{status:?}"
    );

    let mut no_key = script_task(cluster, "t", "true\n");
    no_key.connection = None;
    let status = refused(no_key).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("FLYTE_SLURM_SSH_PRIVATE_KEY"),
        "{status:?}"
    );

    let reserved = task(
        cluster,
        "slurm_script",
        "t",
        custom(
            cluster,
            json!({"script": "true", "sbatch_options": {"chdir": "/"}}),
        ),
        &TypedInputs(vec![]),
    );
    let status = refused(reserved).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("sbatch option 'chdir' is set by the plugin"),
        "{status:?}"
    );

    let upload = task(
        cluster,
        "slurm_script",
        "t",
        custom(
            cluster,
            json!({"script": "true", "outputs": {"model": "file"}, "output_upload": "both"}),
        ),
        &TypedInputs(vec![]),
    );
    let status = refused(upload).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("output_upload must be 'connector' or 'job', not 'both'"),
        "{status:?}"
    );

    // A known_hosts line for another key: the host is refused, named with
    // the key it showed.
    let mut wrong_key = script_task(cluster, "t", "true\n");
    let other = format!(
        "[{}]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        cluster.host, cluster.ssh_port
    );
    wrong_key.connection = Some(connection(&[
        ("ssh_private_key", &cluster.private_key),
        ("known_hosts_data", &other),
    ]));
    let status = refused(wrong_key).await;
    assert!(
        status.message().contains(&cluster.host_key_fingerprint),
        "{status:?}"
    );

    // No known_hosts line at all: unknown, named with the key it showed.
    let mut unknown = script_task(cluster, "t", "true\n");
    unknown.connection = Some(connection(&[("ssh_private_key", &cluster.private_key)]));
    let status = refused(unknown).await;
    assert!(
        status.message().contains(&format!(
            "the host key of {}:{} is not known",
            cluster.host, cluster.ssh_port
        )) && status.message().contains(&cluster.host_key_fingerprint),
        "{status:?}"
    );

    // A port the manifest does not name.
    let outside = task(
        cluster,
        "slurm_script",
        "t",
        custom(
            cluster,
            json!({"script": "true", "connection": {"host": cluster.host, "username": cluster.user, "port": 2.0}}),
        ),
        &TypedInputs(vec![]),
    );
    let status = refused(outside).await;
    assert!(
        status
            .message()
            .contains(&format!("SSH to {}:2 is not allowed", cluster.host)),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_time_limit_fails() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let slurm = serve(cluster);
    let request = task(
        cluster,
        "slurm_script",
        "overruns",
        custom(
            cluster,
            json!({"script": "sleep 600", "sbatch": {"partition": "debug", "time_limit": "1"}}),
        ),
        &TypedInputs(vec![]),
    );
    let meta = slurm.create(request).await.expect("CreateTask");
    // Slurm ends it a minute in, at its next check of time limits.
    let deadline = Instant::now() + Duration::from_secs(240);
    let done = loop {
        let resource = slurm.get(&meta, &keys(cluster)).await;
        if !matches!(resource.phase(), Phase::Queued | Phase::Running) {
            break resource;
        }
        assert!(Instant::now() < deadline, "{}", resource.message);
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(done.phase(), Phase::Failed, "{}", done.message);
    let job_id = field(&meta_json(&meta), "job_id").to_owned();
    assert!(
        done.message
            .starts_with(&format!("Slurm job {job_id} is TIMEOUT")),
        "{}",
        done.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_polls_share_one_ssh_connection() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let slurm = serve(cluster);
    let meta = slurm
        .create(script_task(cluster, "polled", "sleep 300\n"))
        .await
        .expect("CreateTask");
    for _ in 0..100 {
        let resource = slurm.get(&meta, &keys(cluster)).await;
        assert!(
            matches!(resource.phase(), Phase::Queued | Phase::Running),
            "{}",
            resource.message
        );
    }
    let opened = || -> f64 {
        slurm
            .server
            .metrics_text()
            .lines()
            .filter(|line| line.starts_with("flyte_connector_ssh_connections_total{"))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(opened(), 1.0, "create and 100 polls over one connection");
    // Sixteen at once need two connections' channels (eight each): the
    // calls that find the first busy wait for the one being opened rather
    // than each opening their own.
    let connection = keys(cluster);
    let burst = (0..16).map(|_| slurm.get(&meta, &connection));
    for resource in futures_util::future::join_all(burst).await {
        assert!(
            matches!(resource.phase(), Phase::Queued | Phase::Running),
            "{}",
            resource.message
        );
    }
    assert!(
        opened() <= 2.0,
        "a burst of 16 polls opens one more connection at most"
    );
    slurm
        .delete(&meta, &keys(cluster))
        .await
        .expect("DeleteTask");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_down_is_unavailable_never_a_lost_job() {
    let _alone = CONTROLLER.write().await;
    let cluster = cluster();
    let slurm = serve(cluster);
    let meta = slurm
        .create(script_task(cluster, "outlives", "sleep 300\n"))
        .await
        .expect("CreateTask");
    until(&slurm, &meta, &keys(cluster), |p| p == Phase::Running).await;
    cluster.controller("stop");
    let status = slurm
        .try_get(&meta, &keys(cluster))
        .await
        .expect_err("Slurm is down");
    cluster.controller("start");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "`squeue` could not reach Slurm on {}",
            cluster.host
        )),
        "{status:?}"
    );
    // Back up, the job is still there.
    let running = until(&slurm, &meta, &keys(cluster), |p| p == Phase::Running).await;
    assert_eq!(running.phase(), Phase::Running);
    slurm
        .delete(&meta, &keys(cluster))
        .await
        .expect("DeleteTask");
}
