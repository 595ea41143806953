//! flyte-connect: a Flyte 2 connector service that runs each connector as a
//! WebAssembly component.
//!
//! A request flows one way through these modules:
//! [`service`] (gRPC) → [`registry`] (which connector) → [`convert`]
//! (protobuf literals to JSON) → [`runtime`] (an instance: fresh, or a
//! warm one of the same tenant) → [`convert`] → response. [`connector`]
//! holds the plain types in between.
//!
//! - [`cli`]: the command line, compatible with the Python server's.
//! - [`server`]: assembles the gRPC services, health, reflection, metrics
//!   endpoint and shutdown into a [`ConnectorService`].
//! - [`loading`]: finds components in plugin folders and `--modules`, loads
//!   them, and keeps the folders' connectors in step with the files.
//! - [`manifest`]: a plugin's `NAME.toml` (limits, env, and the sections
//!   of the capabilities it is granted).
//! - [`file_stamp`]: when a file on disk changed.
//! - [`size`]: a size in bytes as flags take and show it.
//! - [`local_run`]: `flyte-connect run`, one task through one component
//!   without a cluster.
//! - [`metrics`]: the Prometheus metrics.
//! - [`proto`]: the generated flyteidl2 types.

#![deny(missing_docs)]

pub mod cli;
pub mod connector;
pub mod convert;
pub mod file_stamp;
pub mod loading;
pub mod local_run;
pub mod manifest;
pub mod metrics;
pub mod proto;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod service;
pub mod size;
pub mod telemetry;

pub use server::{ConnectorService, ServerConfig};
