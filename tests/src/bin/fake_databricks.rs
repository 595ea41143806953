//! The fake Databricks workspace of the test harness as a process, for
//! tests in other languages: `fake-databricks TOKEN` serves on a free
//! loopback port, prints `listening on 127.0.0.1:PORT`, and runs until its
//! standard input closes.

use std::io::{Read, Write};

use flyte_connect_e2e::fake_databricks::FakeDatabricks;

#[tokio::main]
async fn main() {
    let token = std::env::args()
        .nth(1)
        .expect("usage: fake-databricks TOKEN");
    let fake = FakeDatabricks::start(&token).await;
    println!("listening on {}", fake.addr());
    std::io::stdout().flush().expect("flush stdout");
    // Serve until the parent closes our stdin (or dies).
    tokio::task::spawn_blocking(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    })
    .await
    .expect("wait for stdin to close");
}
