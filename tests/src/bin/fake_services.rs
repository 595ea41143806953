//! The fake services of the test harness as a process, for tests in other
//! languages. One fake per process:
//!
//! | command | fake |
//! | --- | --- |
//! | `fake-services databricks TOKEN` | Databricks Jobs API, accepting `TOKEN` |
//! | `fake-services bigquery CLIENT_EMAIL PRIVATE_KEY_ID PUBLIC_KEY_PEM_PATH` | BigQuery jobs API and GCE metadata token endpoint |
//! | `fake-services snowflake ACCOUNT USER PUBLIC_KEY_PEM_PATH` | Snowflake SQL API, accepting USER's key-pair JWTs |
//!
//! It serves on a free loopback port, prints `listening on 127.0.0.1:PORT`,
//! and runs until its standard input closes. Each fake also serves
//! `GET /__fake/calls` (its request counters) and `GET /__fake/submitted`
//! (the bodies submitted, with their user agents).

use std::{
    io::{Read, Write},
    net::SocketAddr,
    process::ExitCode,
};

use flyte_connect_e2e::{
    fake_bigquery::{FakeBigQuery, ServiceAccount},
    fake_databricks::FakeDatabricks,
    fake_snowflake::FakeSnowflake,
    jwt,
};

const USAGE: &str = "usage: fake-services databricks TOKEN
       fake-services bigquery CLIENT_EMAIL PRIVATE_KEY_ID PUBLIC_KEY_PEM_PATH
       fake-services snowflake ACCOUNT USER PUBLIC_KEY_PEM_PATH";

/// The fake being served; dropping it stops it.
enum Running {
    Databricks(FakeDatabricks),
    BigQuery(FakeBigQuery),
    Snowflake(FakeSnowflake),
}

impl Running {
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Databricks(fake) => fake.addr(),
            Self::BigQuery(fake) => fake.addr(),
            Self::Snowflake(fake) => fake.addr(),
        }
    }
}

fn read_public_key(path: &str) -> Result<rsa::RsaPublicKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    jwt::parse_public_key(&pem).map_err(|e| format!("{path}: {e}"))
}

async fn start(args: &[String]) -> Result<Running, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(match args.as_slice() {
        ["databricks", token] => Running::Databricks(FakeDatabricks::start(token).await),
        ["bigquery", client_email, private_key_id, public_key] => {
            let account = ServiceAccount {
                client_email: (*client_email).to_owned(),
                private_key_id: (*private_key_id).to_owned(),
                public_key: read_public_key(public_key)?,
            };
            Running::BigQuery(FakeBigQuery::start(account).await)
        }
        ["snowflake", account, user, public_key] => Running::Snowflake(
            FakeSnowflake::start(account, user, read_public_key(public_key)?).await,
        ),
        _ => return Err(USAGE.to_owned()),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fake = match start(&args).await {
        Ok(fake) => fake,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    println!("listening on {}", fake.addr());
    std::io::stdout().flush().expect("flush stdout");
    // Serve until the parent closes our stdin (or dies).
    tokio::task::spawn_blocking(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    })
    .await
    .expect("wait for stdin to close");
    drop(fake);
    ExitCode::SUCCESS
}
