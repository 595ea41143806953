//! Past one machine: three replicas of the real binary, reached as Flyte's
//! executor reaches the connector Service — round-robin over every replica,
//! each call on the next one. Nothing a later call needs lives in a replica:
//! a task created on one is polled and deleted on the others with the same
//! answers, and a rolling restart under continuous load (SIGTERM one replica
//! at a time, start its replacement on the same port, wait until it serves)
//! loses no call when the client retries UNAVAILABLE as the executor does.

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use flyte_connect::proto::{
    connector::{
        CreateTaskRequest, DeleteTaskRequest, GetTaskRequest, Resource,
        async_connector_service_client::AsyncConnectorServiceClient,
    },
    core::{SimpleType, task_execution::Phase},
};
use flyte_connect_e2e::{
    Server, Workspace,
    fake_databricks::{self, FakeDatabricks},
    hosted::connection,
    literals::{self, TypedInputs, category, int, simple, string},
    metric_value,
};
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint},
};

const REPLICAS: usize = 3;
const TOKEN: &str = "dapi-replica-token";

/// The executor's retry policy for UNAVAILABLE: up to this many attempts
/// of one call, backing off from [`FIRST_BACKOFF`], doubling, to [`MAX_BACKOFF`].
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The executor's default deadline of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `count` free loopback ports.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("its address").port())
        .collect()
}

/// A client that sends each call to the next replica in turn, as gRPC's
/// `round_robin` policy does, reconnecting to a replica that went away.
#[derive(Clone)]
struct RoundRobin {
    clients: Vec<AsyncConnectorServiceClient<Channel>>,
    next: Arc<AtomicUsize>,
}

impl RoundRobin {
    fn new(ports: &[u16]) -> Self {
        let clients = ports
            .iter()
            .map(|port| {
                let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("a valid URI")
                    .timeout(CALL_TIMEOUT)
                    .connect_timeout(Duration::from_secs(1))
                    .connect_lazy();
                AsyncConnectorServiceClient::new(channel)
            })
            .collect();
        Self {
            clients,
            next: Arc::default(),
        }
    }

    fn pick(&self) -> AsyncConnectorServiceClient<Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    calls: AtomicUsize,
    retried: AtomicUsize,
    lost: AtomicUsize,
}

/// The code the executor's gRPC client (grpc-go) reports for `status`: a
/// failure of the connection itself — refused, closed before the request
/// was sent, or a GOAWAY from a replica shutting down, which tonic reports
/// as CANCELLED or INTERNAL — is UNAVAILABLE there.
fn code_as_the_executor_sees_it(status: &Status) -> Code {
    let from_transport = std::error::Error::source(status)
        .is_some_and(|source| source.downcast_ref::<tonic::transport::Error>().is_some());
    if from_transport {
        Code::Unavailable
    } else {
        status.code()
    }
}

/// Runs one call on the next replica, retrying UNAVAILABLE on the
/// following ones with the executor's backoff.
async fn call<T, F, Fut>(rr: &RoundRobin, tally: &Tally, mut attempt: F) -> Result<T, Status>
where
    F: FnMut(AsyncConnectorServiceClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    tally.calls.fetch_add(1, Ordering::Relaxed);
    let mut backoff = FIRST_BACKOFF;
    for tries in 1..=ATTEMPTS {
        match attempt(rr.pick()).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status)
                if code_as_the_executor_sees_it(&status) == Code::Unavailable
                    && tries < ATTEMPTS =>
            {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(status) => {
                tally.lost.fetch_add(1, Ordering::Relaxed);
                return Err(status);
            }
        }
    }
    unreachable!("the last attempt returns")
}

fn echo_inputs(n: i64) -> TypedInputs {
    TypedInputs(vec![
        ("n", int(n), simple(SimpleType::Integer)),
        ("s", string("replicated"), simple(SimpleType::String)),
    ])
}

/// One echo task, each call on the next replica: the outputs must be the inputs.
async fn echo_cycle(rr: &RoundRobin, tally: &Tally, n: i64) -> Result<(), String> {
    let inputs = echo_inputs(n);
    let request = literals::create_request("echo", &inputs);
    let meta = call(rr, tally, |mut c| {
        let request = request.clone();
        async move { c.create_task(request).await }
    })
    .await
    .map_err(|s| format!("create: {s}"))?
    .resource_meta;
    let got = call(rr, tally, |mut c| {
        let meta = meta.clone();
        async move {
            c.get_task(GetTaskRequest {
                task_category: category("echo"),
                resource_meta: meta,
                ..Default::default()
            })
            .await
        }
    })
    .await
    .map_err(|s| format!("get: {s}"))?;
    let resource = got.resource.ok_or("get: no resource")?;
    let outputs = resource.outputs.map(|o| o.literals).unwrap_or_default();
    if outputs != inputs.inputs().literals {
        return Err(format!("get: outputs {outputs:?} differ from the inputs"));
    }
    call(rr, tally, |mut c| {
        let meta = meta.clone();
        async move {
            c.delete_task(DeleteTaskRequest {
                task_category: category("echo"),
                resource_meta: meta,
                ..Default::default()
            })
            .await
        }
    })
    .await
    .map_err(|s| format!("delete: {s}"))?;
    Ok(())
}

fn start_replicas(plugins: &Workspace, ports: &[u16]) -> Vec<Server> {
    let dir = plugins.path().display().to_string();
    ports
        .iter()
        .map(|&port| Server::start_on(port, &["--plugin-dir", &dir], plugins.path(), &[]))
        .collect()
}

fn successes(server: &Server, task_type: &str, operation: &str) -> f64 {
    metric_value(
        &server.metrics_text(),
        "flyte_connector_requests_success_total",
        &[("task_type", task_type), ("operation", operation)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_on_one_replica_is_polled_and_deleted_on_the_others() {
    let fake = FakeDatabricks::start(TOKEN).await;
    let plugins = Workspace::with_components(&["echo", "databricks"]);
    plugins.write(
        "databricks.toml",
        format!("allowed_hosts = [\"http://{}\"]\n", fake.addr()).as_bytes(),
    );
    let replicas = start_replicas(&plugins, &free_ports(REPLICAS));
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.tasks().await);
    }
    let secrets = connection(&[("databricks_token", TOKEN)]);

    // A Databricks run submitted through replica 0 ...
    let meta = clients[0]
        .create_task(CreateTaskRequest {
            template: Some(fake_databricks::task_template(
                &fake.base_url(),
                fake_databricks::job_conf("replicated"),
            )),
            connection: Some(secrets.clone()),
            ..Default::default()
        })
        .await
        .expect("CreateTask on replica 0")
        .into_inner()
        .resource_meta;
    // ... is polled to success through replicas 1, 2, 1, 2 ...
    let mut phases = Vec::new();
    let mut last: Option<Resource> = None;
    for poll in 0..6 {
        let resource = clients[1 + poll % 2]
            .get_task(GetTaskRequest {
                task_category: category("databricks"),
                resource_meta: meta.clone(),
                connection: Some(secrets.clone()),
                ..Default::default()
            })
            .await
            .expect("GetTask on another replica")
            .into_inner()
            .resource
            .expect("a resource");
        phases.push(resource.phase());
        let done = resource.phase() == Phase::Succeeded;
        last = Some(resource);
        if done {
            break;
        }
    }
    assert_eq!(phases.last(), Some(&Phase::Succeeded), "{phases:?}");
    assert!(phases.len() > 1, "polled more than once: {phases:?}");
    // ... whose answer any replica gives the same ...
    let again = clients[0]
        .get_task(GetTaskRequest {
            task_category: category("databricks"),
            resource_meta: meta.clone(),
            connection: Some(secrets.clone()),
            ..Default::default()
        })
        .await
        .expect("GetTask on replica 0")
        .into_inner()
        .resource;
    assert_eq!(again, last);
    // ... and is cancelled through replica 2.
    clients[2]
        .delete_task(DeleteTaskRequest {
            task_category: category("databricks"),
            resource_meta: meta,
            connection: Some(secrets),
        })
        .await
        .expect("DeleteTask on replica 2");
    assert_eq!(fake.calls().submit, 1);
    assert_eq!(fake.calls().cancel, 1);

    // Round-robin echo tasks: every call succeeds, every output is its input
    // though each task's create, get and delete ran on three replicas.
    let rr = RoundRobin::new(
        &replicas
            .iter()
            .map(|r| r.grpc_addr.port())
            .collect::<Vec<_>>(),
    );
    let tally = Tally::default();
    for n in 0..20 {
        echo_cycle(&rr, &tally, n).await.expect("an echo task");
    }
    assert_eq!(tally.calls.load(Ordering::Relaxed), 60);
    assert_eq!(tally.retried.load(Ordering::Relaxed), 0);
    // Each call went to the next replica: 20 calls each.
    for (i, replica) in replicas.iter().enumerate() {
        let served: f64 = ["create", "get", "delete"]
            .iter()
            .map(|operation| successes(replica, "echo", operation))
            .sum();
        assert_eq!(served, 20.0, "replica {i} served {served} echo calls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_call() {
    const CLIENTS: usize = 8;
    let plugins = Workspace::with_components(&["echo", "faulty"]);
    let ports = free_ports(REPLICAS);
    let mut replicas = start_replicas(&plugins, &ports);
    let rr = RoundRobin::new(&ports);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));

    let mut load = Vec::new();
    for client in 0..CLIENTS {
        let (rr, tally, stop) = (rr.clone(), Arc::clone(&tally), Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if let Err(failure) = echo_cycle(&rr, &tally, (client * 100_000 + n) as i64).await {
                    failures.push(failure);
                }
            }
            failures
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = plugins.path().display().to_string();
    for (i, &port) in ports.iter().enumerate() {
        // SIGTERM: the replica stops taking connections, finishes the calls
        // in flight — here a 400 ms one besides the load's — and exits 0;
        // its replacement serves on the same port.
        let mut direct = replicas[i].tasks().await;
        let slow = tokio::spawn(async move {
            let inputs = TypedInputs(vec![("ms", int(400), simple(SimpleType::Integer))]);
            direct
                .create_task(literals::create_request("slow", &inputs))
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        replicas[i].signal_terminate();
        let status = tokio::task::block_in_place(|| replicas[i].wait());
        assert!(status.success(), "replica {i} exited with {status}");
        let slow = slow.await.expect("the slow call's task");
        assert!(
            slow.is_ok(),
            "the call in flight at SIGTERM failed: {slow:?}"
        );
        replicas[i] = tokio::task::block_in_place(|| {
            Server::start_on(port, &["--plugin-dir", &dir], plugins.path(), &[])
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    for worker in load {
        failures.extend(worker.await.expect("a load client"));
    }
    let (calls, retried, lost) = (
        tally.calls.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed),
        tally.lost.load(Ordering::Relaxed),
    );
    println!(
        "rolling restart of {REPLICAS} replicas under {CLIENTS} clients: {calls} calls made, {retried} retried, {lost} lost"
    );
    assert!(failures.is_empty(), "{lost} calls lost: {failures:?}");
    assert!(
        calls > 300,
        "the load kept running through the restart ({calls} calls)"
    );
    // Every replacement took its share of the load.
    for (i, replica) in replicas.iter().enumerate() {
        assert!(
            successes(replica, "echo", "get") > 0.0,
            "replacement {i} served no call"
        );
    }
}
