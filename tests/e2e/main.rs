//! End-to-end tests: each starts the real `flyte-connect` binary on free
//! loopback ports with real components and talks to it as a client would.

mod bigquery;
mod cli;
mod concurrency;
mod confinement;
mod contract;
mod databricks;
mod egress;
mod egress_guard;
mod errors;
mod faulty_guests;
mod isolation;
mod lifecycle;
mod limits;
mod logs;
mod memory;
mod observability;
mod outbound;
mod queue;
mod reload;
mod replicas;
mod reuse;
mod run_loop;
mod slurm;
mod snowflake;
mod ssh;
mod tasks;
mod traces;
mod tutorial;
