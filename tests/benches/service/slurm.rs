//! What polling a running Slurm job costs (issue 26): GetTask of one job
//! running on the harness's one-node Slurm cluster behind a real OpenSSH
//! server on loopback (`tests/cluster`), with flyte-connect's Slurm
//! connector (`slurm.wasm`, SSH through the host's pooled connections),
//! beside the anchor a user would otherwise run: the Python server `c0`
//! serving `flyteplugins-slurm`'s connector (asyncssh, one cached
//! connection per identity).
//!
//! Each row creates its job through its own server, then each level (1,
//! 16 and 64 clients for `BENCH_SECONDS`) reports GetTask/s, p50, p99, the
//! CPU time of the server's own process per call (`squeue`, run by sshd
//! for both, is not counted in either) and the SSH connections sshd
//! accepted per 100 calls (from its log). `-- --slurm` runs only these
//! rows.

use std::{collections::BTreeMap, path::Path, process::Stdio, time::Duration};

use flyte_connect::proto::{
    connector::{
        CreateTaskRequest, DeleteTaskRequest, GetTaskRequest,
        async_connector_service_client::AsyncConnectorServiceClient,
    },
    core::{Connection, Identifier, TaskTemplate, task_execution::Phase},
};
use flyte_connect_e2e::{
    Workspace,
    cluster::{Cluster, cluster},
    hosted::connection,
    literals::category,
};
use serde_json::json;

use super::{
    load::{LoadReport, MAX_CONNECTIONS, connect, polls},
    servers::{self, Target, cpu_time},
};

const LEVELS: [usize; 3] = [1, 16, 64];
const WARM_UP: Duration = Duration::from_secs(2);

/// What one level measured.
pub struct Level {
    load: LoadReport,
    cpu: Option<Duration>,
    /// SSH connections sshd accepted during the level.
    connections: usize,
    messages: BTreeMap<String, String>,
}

impl Level {
    fn cpu_per_call(&self) -> Option<Duration> {
        let calls = u32::try_from(self.load.cycles).ok().filter(|&n| n > 0)?;
        Some(self.cpu? / calls)
    }

    fn connections_per_100(&self) -> Option<f64> {
        (self.load.cycles > 0).then(|| self.connections as f64 * 100.0 / self.load.cycles as f64)
    }
}

/// One server's levels, or why it could not be measured.
pub struct Row {
    name: &'static str,
    levels: Vec<Level>,
    failure: Option<String>,
}

impl Row {
    fn at(&self, clients: usize) -> Option<&Level> {
        self.levels.iter().find(|l| l.load.clients == clients)
    }
}

/// SSH connections sshd has accepted so far.
fn accepted(cluster: &Cluster) -> usize {
    cluster.sshd_log().matches("Accepted publickey").count()
}

fn keys(cluster: &Cluster) -> Connection {
    connection(&[
        ("ssh_private_key", &cluster.private_key),
        ("known_hosts_data", &cluster.known_hosts),
    ])
}

/// A `slurm_script` task sleeping for an hour on the cluster.
fn long_job(cluster: &Cluster) -> CreateTaskRequest {
    let custom = json!({
        "connection": {"host": cluster.host, "username": cluster.user,
                       "port": f64::from(cluster.ssh_port)},
        "sbatch": {"partition": "debug"},
        "sbatch_options": {},
        "container": {"runtime": "pyxis", "args": [], "image": null, "mounts": [],
                      "workdir": null, "srun_args": []},
        "env": {},
        "script": "sleep 3600\n",
        "working_dir": cluster.jobs_dir,
    });
    CreateTaskRequest {
        template: Some(TaskTemplate {
            r#type: "slurm_script".into(),
            id: Some(Identifier {
                name: "bench.slurm.poll".into(),
                ..Default::default()
            }),
            custom: serde_json::from_value(custom).ok(),
            ..Default::default()
        }),
        output_prefix: "s3://bench/run/a0".into(),
        connection: Some(keys(cluster)),
        ..Default::default()
    }
}

/// `clients` clients polling `meta` on `target` for `duration`, with the
/// server's CPU time and sshd's new connections around them.
async fn level(
    target: &Target,
    cluster: &Cluster,
    meta: &[u8],
    clients: usize,
    duration: Duration,
) -> Level {
    let request = GetTaskRequest {
        task_category: category(target.task_type),
        resource_meta: meta.to_vec(),
        connection: Some(keys(cluster)),
        ..Default::default()
    };
    let accepted_before = accepted(cluster);
    let cpu_before = cpu_time(target.pid());
    let (load, messages) = polls(
        target.addr,
        &request,
        |phase| matches!(phase, Phase::Running | Phase::Queued),
        clients,
        duration,
    )
    .await;
    let cpu = cpu_time(target.pid())
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    Level {
        load,
        cpu,
        connections: accepted(cluster).saturating_sub(accepted_before),
        messages,
    }
}

async fn measure_row(target: Target, cluster: &Cluster, seconds: Duration) -> Row {
    eprintln!("measuring {} ...", target.name);
    let mut client = AsyncConnectorServiceClient::new(connect(target.addr).await);
    let mut row = Row {
        name: target.name,
        levels: Vec::new(),
        failure: None,
    };
    let meta = match client.create_task(long_job(cluster)).await {
        Ok(answer) => answer.into_inner().resource_meta,
        Err(status) => {
            row.failure = Some(format!(
                "CreateTask: {:?}: {}",
                status.code(),
                status.message()
            ));
            return row;
        }
    };
    level(&target, cluster, &meta, 1, WARM_UP).await;
    for clients in LEVELS {
        row.levels
            .push(level(&target, cluster, &meta, clients, seconds).await);
    }
    let _ = client
        .delete_task(DeleteTaskRequest {
            task_category: category(target.task_type),
            resource_meta: meta,
            connection: Some(keys(cluster)),
        })
        .await;
    row
}

/// Measures both rows, one server at a time, against one cluster; `venv`
/// holds `c0` and `flyteplugins-slurm`.
pub async fn measure(seconds: Duration, venv: &Path) -> Vec<Row> {
    let cluster = cluster();
    let plugins = Workspace::with_components(&["slurm"]);
    plugins.write(
        "slurm.toml",
        format!(
            "[ssh]\nallowed_hosts = [\"{}:{}\"]\n",
            cluster.host, cluster.ssh_port
        )
        .as_bytes(),
    );
    let mut rows = Vec::new();
    let ours = servers::flyte_connect(
        "(1) flyte-connect, slurm.wasm",
        "slurm_script",
        plugins.path(),
        &[],
    )
    .await;
    rows.push(measure_row(ours, cluster, seconds).await);
    let python = servers::python_serving(
        venv,
        "(2) Python c0, flyteplugins-slurm (asyncssh)",
        "slurm_script",
        "flyteplugins.slurm.connector",
        plugins.path(),
        &[],
        Stdio::null(),
    )
    .await;
    rows.push(measure_row(python, cluster, seconds).await);
    rows
}

fn micros(d: Option<Duration>) -> String {
    d.map_or("?".to_owned(), |d| {
        format!("{} µs", super::thousands(d.as_secs_f64() * 1e6))
    })
}

/// Prints the rows, and the ratios of flyte-connect to the anchor.
pub fn report(rows: &[Row], seconds: Duration) {
    println!();
    println!(
        "GetTask of one running Slurm job (created through each server) at 1, 16 and 64 \
         concurrent clients, {}s per level, clients share up to {MAX_CONNECTIONS} connections; \
         sshd and Slurm run on the same cores. CPU is the server process's own per successful \
         call; SSH connections are those sshd accepted (their count in parentheses)",
        seconds.as_secs()
    );
    println!();
    println!(
        "| server | clients | GetTask/s | p50 | p99 | server CPU per call | SSH connections per \
         100 calls | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in rows {
        if let Some(failure) = &row.failure {
            println!("| {} | | | | | | | {failure} |", row.name);
        }
        for level in &row.levels {
            let r = &level.load;
            let errors = if r.errors.is_empty() {
                "0".to_owned()
            } else {
                format!("{:?} {:?}", r.errors, level.messages)
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {errors} |",
                row.name,
                r.clients,
                super::thousands(r.rate()),
                super::ms(r.quantile(0.5)),
                super::ms(r.quantile(0.99)),
                micros(level.cpu_per_call()),
                level
                    .connections_per_100()
                    .map_or("?".to_owned(), |c| format!(
                        "{c:.2} ({})",
                        level.connections
                    )),
            );
        }
    }
    if let [ours, python] = rows {
        println!();
        println!(
            "| clients | GetTask/s, flyte-connect ÷ c0 | CPU per call, flyte-connect ÷ c0 |\n| \
             ---: | ---: | ---: |"
        );
        for clients in LEVELS {
            let (Some(a), Some(b)) = (ours.at(clients), python.at(clients)) else {
                continue;
            };
            let rate = a.load.rate() / b.load.rate().max(f64::MIN_POSITIVE);
            let cpu = a
                .cpu_per_call()
                .zip(b.cpu_per_call())
                .map_or("?".to_owned(), |(a, b)| {
                    format!(
                        "{:.2}×",
                        a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
                    )
                });
            println!("| {clients} | {rate:.2}× | {cpu} |");
        }
    }
}
