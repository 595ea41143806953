//! The load generator: clients that each run create → get → delete cycles
//! against a connector service for a fixed time, as Flyte's executor does
//! for every task it runs.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use flyte_connect::proto::{
    connector::{
        DeleteTaskRequest, GetTaskRequest,
        async_connector_service_client::AsyncConnectorServiceClient,
    },
    core::{SimpleType, task_execution::Phase},
};
use flyte_connect_e2e::literals::{self, TypedInputs, category, int, simple};
use tonic::transport::{Channel, Endpoint};

/// Clients share this many HTTP/2 connections at most (Flyte's executor
/// multiplexes its calls over a few connections, not one per task).
pub const MAX_CONNECTIONS: usize = 16;

/// What one load level measured.
pub struct LoadReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Successful cycles.
    pub cycles: u64,
    /// Failed RPCs by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the level.
    pub elapsed: Duration,
    /// Latency of every successful cycle, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// Successful cycles per second.
    pub fn rate(&self) -> f64 {
        self.cycles as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of cycle latency.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }

    /// All failed RPCs.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The one-integer echo task every cycle creates.
fn echo_inputs() -> TypedInputs {
    TypedInputs(vec![("n", int(7), simple(SimpleType::Integer))])
}

/// A channel to the server under test at `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect to the server under test")
}

/// One create → get → delete cycle; the failing RPC's code on error.
async fn cycle(
    client: &mut AsyncConnectorServiceClient<Channel>,
    task_type: &str,
    inputs: &TypedInputs,
) -> Result<(), tonic::Code> {
    let meta = client
        .create_task(literals::create_request(task_type, inputs))
        .await
        .map_err(|status| status.code())?
        .into_inner()
        .resource_meta;
    client
        .get_task(GetTaskRequest {
            task_category: category(task_type),
            resource_meta: meta.clone(),
            ..Default::default()
        })
        .await
        .map_err(|status| status.code())?;
    client
        .delete_task(DeleteTaskRequest {
            task_category: category(task_type),
            resource_meta: meta,
            ..Default::default()
        })
        .await
        .map_err(|status| status.code())?;
    Ok(())
}

/// Runs `clients` clients for `duration` against the echo connector serving
/// `task_type` at `addr`.
pub async fn run(
    addr: SocketAddr,
    task_type: &'static str,
    clients: usize,
    duration: Duration,
) -> LoadReport {
    let connections = clients.clamp(1, MAX_CONNECTIONS);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(addr).await);
    }
    let started = Instant::now();
    let until = started + duration;
    let mut workers = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut client = AsyncConnectorServiceClient::new(channels[i % connections].clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        workers.push(tokio::spawn(async move {
            let inputs = echo_inputs();
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < until {
                let began = Instant::now();
                match cycle(&mut client, task_type, &inputs).await {
                    Ok(()) => latencies.push(began.elapsed()),
                    Err(code) => *errors.entry(format!("{code:?}")).or_default() += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut report = LoadReport {
        clients,
        cycles: 0,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for worker in workers {
        let (latencies, errors) = worker.await.expect("a load client panicked");
        report.latencies.extend(latencies);
        for (code, n) in errors {
            *report.errors.entry(code).or_default() += n;
        }
    }
    report.elapsed = started.elapsed();
    report.cycles = report.latencies.len() as u64;
    report.latencies.sort();
    report
}

/// How long one GetTask of [`polls`] may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// One GetTask, whose answer's phase must be `expected`; else the kind of
/// failure (a gRPC code or the phase) and its message.
async fn poll(
    client: &mut AsyncConnectorServiceClient<Channel>,
    request: &GetTaskRequest,
    expected: fn(Phase) -> bool,
) -> Result<(), (String, String)> {
    let mut call = tonic::Request::new(request.clone());
    call.set_timeout(POLL_TIMEOUT);
    let resource = client
        .get_task(call)
        .await
        .map_err(|status| (format!("{:?}", status.code()), status.message().to_owned()))?
        .into_inner()
        .resource
        .unwrap_or_default();
    if expected(resource.phase()) {
        Ok(())
    } else {
        Err((format!("phase {:?}", resource.phase()), resource.message))
    }
}

/// `clients` clients polling the server at `addr` with GetTask `request`
/// for `duration` over up to [`MAX_CONNECTIONS`] connections, each answer's
/// phase judged by `expected`: the calls as a report (a "cycle" is one
/// GetTask), and the first message of each kind of failure.
pub async fn polls(
    addr: SocketAddr,
    request: &GetTaskRequest,
    expected: fn(Phase) -> bool,
    clients: usize,
    duration: Duration,
) -> (LoadReport, BTreeMap<String, String>) {
    let connections = clients.clamp(1, MAX_CONNECTIONS);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(addr).await);
    }
    let started = Instant::now();
    let until = started + duration;
    let mut workers = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut client = AsyncConnectorServiceClient::new(channels[i % connections].clone());
        let request = request.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut messages = BTreeMap::new();
            while Instant::now() < until {
                let began = Instant::now();
                match poll(&mut client, &request, expected).await {
                    Ok(()) => latencies.push(began.elapsed()),
                    Err((kind, message)) => {
                        *errors.entry(kind.clone()).or_default() += 1;
                        messages.entry(kind).or_insert(message);
                    }
                }
            }
            (latencies, errors, messages)
        }));
    }
    let mut load = LoadReport {
        clients,
        cycles: 0,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    let mut messages = BTreeMap::new();
    for worker in workers {
        let (latencies, errors, first) = worker.await.expect("a load client panicked");
        load.latencies.extend(latencies);
        for (kind, n) in errors {
            *load.errors.entry(kind).or_default() += n;
        }
        for (kind, message) in first {
            messages.entry(kind).or_insert(message);
        }
    }
    load.elapsed = started.elapsed();
    load.cycles = load.latencies.len() as u64;
    load.latencies.sort();
    (load, messages)
}
