//! What one poll of a task on an external service costs: sequential
//! GetTask calls of the service connectors against the harness's loopback
//! fakes, beside an echo GetTask (no outbound request) and a Databricks one
//! (one request with a bearer token, nothing signed), so the cost of each
//! connector's authentication shows as a difference in the same run. The
//! signing connectors are measured again with `instance_reuse =
//! "connection"`, where they sign once per token lifetime.

use std::time::{Duration, Instant};

use flyte_connect::proto::core::{Connection, SimpleType};
use flyte_connect_e2e::{
    fake_bigquery::{FakeBigQuery, ServiceAccount},
    fake_databricks::FakeDatabricks,
    fake_snowflake::FakeSnowflake,
    hosted::{HostedConnector, connection},
    jwt,
    literals::{self, TypedInputs, simple},
};

/// GetTask calls measured per row, after [`WARM_UP`] unmeasured ones.
const CALLS: usize = 200;
const WARM_UP: usize = 20;

/// One row: what was polled, and the median and p99 of a GetTask.
pub struct PollCost {
    /// What the row measures.
    pub what: &'static str,
    /// Median GetTask latency.
    pub p50: Duration,
    /// 99th percentile GetTask latency.
    pub p99: Duration,
}

async fn poll(
    what: &'static str,
    hosted: &HostedConnector,
    meta: &[u8],
    connection: &Connection,
) -> PollCost {
    eprintln!("measuring GetTask of {what} ...");
    for _ in 0..WARM_UP {
        hosted.get(meta, connection).await;
    }
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        hosted.get(meta, connection).await;
        times.push(start.elapsed());
    }
    times.sort();
    PollCost {
        what,
        p50: times[CALLS / 2],
        p99: times[CALLS * 99 / 100],
    }
}

/// Serves one connector, logging at the default level (info).
fn start(name: &str, task_type: &str, manifest: &str) -> HostedConnector {
    HostedConnector::start_with_env(name, task_type, manifest, &[])
}

/// Measures every row, one server at a time.
pub async fn measure() -> Vec<PollCost> {
    let mut rows = Vec::new();

    let echo = start("echo", "echo", "");
    let request = literals::create_request(
        "echo",
        &TypedInputs(vec![("x", literals::int(1), simple(SimpleType::Integer))]),
    );
    let meta = echo.create(request).await.expect("create an echo task");
    rows.push(
        poll(
            "echo (no outbound request)",
            &echo,
            &meta,
            &Connection::default(),
        )
        .await,
    );
    drop(echo);

    let token = "dapi-bench";
    let databricks = FakeDatabricks::start(token).await;
    databricks.add_run(1);
    let hosted = start(
        "databricks",
        "databricks",
        &format!("allowed_hosts = [\"{}\"]\n", databricks.base_url()),
    );
    let meta = format!(
        r#"{{"databricks_instance": "{}", "run_id": "1"}}"#,
        databricks.base_url()
    );
    let with_token = connection(&[("databricks_token", token)]);
    rows.push(
        poll(
            "databricks (1 request, bearer token)",
            &hosted,
            meta.as_bytes(),
            &with_token,
        )
        .await,
    );
    drop(hosted);

    let google = FakeBigQuery::start(ServiceAccount::test_account()).await;
    google.add_job("p", "US", "job-1");
    let bigquery_manifest = format!(
        "allowed_hosts = [\"{base}\"]\n[env]\nBIGQUERY_ENDPOINT = \"{base}\"\n\
         GCE_METADATA_HOST = \"{addr}\"\n",
        base = google.base_url(),
        addr = google.addr()
    );
    let hosted = start("bigquery", "bigquery_query_job_task", &bigquery_manifest);
    let meta = br#"{"job_id": "job-1", "project": "p", "location": "US", "user_agent": "bench"}"#;
    rows.push(
        poll(
            "bigquery (2 requests, metadata-server token)",
            &hosted,
            meta,
            &Connection::default(),
        )
        .await,
    );
    let key_file = ServiceAccount::test_key_file("https://oauth2.googleapis.com/token");
    let with_key = connection(&[("google_application_credentials", &key_file)]);
    rows.push(
        poll(
            "bigquery (1 request, self-signed RS256 JWT)",
            &hosted,
            meta,
            &with_key,
        )
        .await,
    );
    drop(hosted);
    let hosted = start(
        "bigquery",
        "bigquery_query_job_task",
        &format!("{}{bigquery_manifest}", super::REUSE_MANIFEST),
    );
    rows.push(
        poll(
            "bigquery with reuse (1 request, the JWT signed once)",
            &hosted,
            meta,
            &with_key,
        )
        .await,
    );
    drop(hosted);

    let snowflake = FakeSnowflake::start(
        "myorg-bench",
        "flyte",
        jwt::fixture_public_key(jwt::SERVICE_PUBLIC_KEY),
    )
    .await;
    snowflake.add_statement("01b9a8c2-0000-4e5f-0000-000000000001");
    let snowflake_manifest = format!(
        "allowed_hosts = [\"{base}\"]\n[env]\nSNOWFLAKE_ENDPOINT = \"{base}\"\n",
        base = snowflake.base_url()
    );
    let hosted = start("snowflake", "snowflake", &snowflake_manifest);
    let meta = br#"{"account": "myorg-bench", "user": "flyte", "database": "D", "schema": "PUBLIC", "warehouse": "W", "query_id": "01b9a8c2-0000-4e5f-0000-000000000001", "has_output": false, "connection_kwargs": {}}"#;
    let plain = jwt::fixture(jwt::SERVICE_KEY);
    rows.push(
        poll(
            "snowflake (1 request, key-pair JWT)",
            &hosted,
            meta,
            &connection(&[("snowflake_private_key", &plain)]),
        )
        .await,
    );
    let encrypted = jwt::fixture(jwt::SERVICE_ENCRYPTED_KEY);
    rows.push(
        poll(
            "snowflake (1 request, key-pair JWT, encrypted key)",
            &hosted,
            meta,
            &connection(&[
                ("snowflake_private_key", &encrypted),
                (
                    "snowflake_private_key_passphrase",
                    jwt::SERVICE_KEY_PASSPHRASE,
                ),
            ]),
        )
        .await,
    );
    drop(hosted);
    let hosted = start(
        "snowflake",
        "snowflake",
        &format!("{}{snowflake_manifest}", super::REUSE_MANIFEST),
    );
    rows.push(
        poll(
            "snowflake with reuse (1 request, the JWT signed once)",
            &hosted,
            meta,
            &connection(&[("snowflake_private_key", &plain)]),
        )
        .await,
    );
    rows
}

/// Prints the rows, with each one's difference from the Databricks row.
pub fn report(rows: &[PollCost]) {
    println!();
    println!(
        "GetTask of the service connectors against loopback fakes, {CALLS} sequential calls each"
    );
    println!();
    println!(
        "| connector | p50 | p99 | p50 − databricks | p50 / databricks (target with reuse: ≤ 1.5x) |\n\
         | --- | ---: | ---: | ---: | ---: |"
    );
    let baseline = rows
        .iter()
        .find(|row| row.what.starts_with("databricks"))
        .map(|row| row.p50);
    for row in rows {
        let extra = baseline.map_or("?".to_owned(), |base| {
            format!(
                "{:+.2} ms",
                (row.p50.as_secs_f64() - base.as_secs_f64()) * 1e3
            )
        });
        let ratio = baseline.map_or("?".to_owned(), |base| {
            format!("{:.2}x", row.p50.as_secs_f64() / base.as_secs_f64())
        });
        println!(
            "| {} | {} | {} | {extra} | {ratio} |",
            row.what,
            super::ms(row.p50),
            super::ms(row.p99)
        );
    }
}
