//! Write [Flyte] connectors in Rust and run them as WebAssembly components
//! in `flyte-connect`.
//!
//! A connector starts a task on an external service (`create`), reports its
//! state (`get`), cancels it (`delete`) and, optionally, reports its metrics
//! and logs. With this crate a connector is one type implementing
//! [`Connector`] and one line exporting it:
//!
//! ```
//! use flyte_connector_sdk::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! /// What `create` remembers about a job; handed back to `get` and `delete`.
//! #[derive(Serialize, Deserialize)]
//! struct JobMeta {
//!     job_id: String,
//! }
//!
//! /// The task's inputs, as the Flyte task declares them.
//! #[derive(Deserialize)]
//! struct Inputs {
//!     query: String,
//! }
//!
//! struct MyConnector;
//!
//! impl Connector for MyConnector {
//!     type Meta = JobMeta;
//!
//!     fn metadata() -> Metadata {
//!         Metadata::new("My Connector").task_type("my_task")
//!     }
//!
//!     fn create(task: TaskRequest) -> Result<JobMeta, Error> {
//!         let inputs: Inputs = task.inputs()?;
//!         let _token = task.secret("api_token")?;
//!         eprintln!("submitting {}", inputs.query); // goes to the host's log
//!         Ok(JobMeta { job_id: "job-1".into() })
//!     }
//!
//!     fn get(meta: JobMeta, _ctx: &Context) -> Result<Resource, Error> {
//!         let state = "succeeded"; // ask the external service
//!         let mut outputs = Outputs::new();
//!         outputs.insert("job_id", &meta.job_id)?;
//!         Ok(Resource::new(Phase::from_state(state)?).outputs(outputs))
//!     }
//!
//!     fn delete(_meta: JobMeta, _ctx: &Context) -> Result<(), Error> {
//!         Ok(())
//!     }
//! }
//!
//! // In the connector crate (a `cdylib` built for `wasm32-wasip2`):
//! // flyte_connector_sdk::export_connector!(MyConnector);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! resulting `.wasm` is a component `flyte-connect` loads.
//!
//! # How values reach the connector
//!
//! Flyte literals cross the component boundary as JSON (the table is in the
//! project's `docs/authoring/values.md`): integers and floats are numbers,
//! strings are strings, collections are arrays, maps and dataclasses are
//! objects, files are `{"uri", "format", "dimensionality"}`, and so on.
//! [`TaskRequest`] turns them into the connector's own serde types.
//!
//! Outputs go back the same way: [`Outputs::insert`] lets the host infer the
//! literal from the JSON value, and [`Output`]'s constructors (files,
//! directories, dataframes, datetimes, durations) state the type exactly.
//!
//! # State
//!
//! What `get` and `delete` need must be in the connector's
//! [`Connector::Meta`], which the host stores with the task. By default every
//! call runs in a fresh instance, so nothing a connector keeps in memory
//! survives to the next call. A plugin whose manifest says `instance_reuse =
//! "connection"` lets a finished call's instance serve later calls with the
//! very same connection (secrets and configs) and no others; [`cache`] keeps
//! values such as a signed token across those calls, until a time each
//! names. A connector using it is correct either way: without reuse the
//! cache is empty at the start of each call. See the project's
//! `docs/authoring/rust.md` and `docs/operating/instance-reuse.md`.
//!
//! # Logging and failures
//!
//! Log with `eprintln!`: the guest's standard error goes to the host's log.
//! Return [`Error::Failed`] when the external service fails,
//! [`Error::Retryable`] when a retry may fix it, and
//! [`Error::InvalidRequest`] when the request cannot be served as sent. A
//! panic aborts the call (the client sees an internal error) and prints its
//! message to standard error; prefer returning an [`Error`].
//!
//! # Calling the external service
//!
//! [`http`] is a blocking HTTP client; the host sends only to the hosts the
//! connector's manifest allows. Its errors convert into [`Error`] with `?`,
//! retryable for HTTP 429 and 5xx and timeouts.
//!
//! With the `jwt` feature, [`jwt`] signs RS256 tokens (service-account and
//! key-pair authentication) inside the sandbox.
//!
//! # Reaching hosts over SSH
//!
//! [`ssh`] runs commands and reads and writes files on hosts the manifest's
//! `[ssh]` section allows, host keys verified, connections pooled by the
//! host across calls. [`storage`] moves files from such a host into the
//! task's output prefix, host side, and says whether objects exist there.
//!
//! [Flyte]: https://flyte.org

#![deny(missing_docs)]

pub mod cache;
mod error;
pub mod http;
#[cfg(feature = "jwt")]
pub mod jwt;
mod metadata;
mod phase;
pub mod python;
mod request;
mod response;
pub mod retry;
pub mod ssh;
pub mod storage;
mod time;

#[doc(hidden)]
pub mod __private;

pub use error::Error;
pub use http::HttpError;
pub use metadata::{Metadata, TaskCategory};
pub use phase::Phase;
pub use request::{Connection, Context, LogsQuery, MetricsQuery, TaskRequest};
pub use response::{LinkType, LogsPage, MetricResult, Output, Outputs, Resource, TaskLog};
pub use serde_json;
pub use time::{Rfc3339, utc_wall_clock};

// The generated bindings name this crate by its own name.
extern crate self as flyte_connector_sdk;

/// Everything a connector usually needs: `use flyte_connector_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Connection, Connector, Context, Error, LinkType, LogsPage, LogsQuery, Metadata,
        MetricResult, MetricsQuery, Output, Outputs, Phase, Resource, TaskCategory, TaskLog,
        TaskRequest,
    };
}

/// A Flyte connector: the one trait a connector implements.
///
/// All functions are associated functions (no `self`): a connector keeps no
/// state between calls that it relies on, since a call runs in a fresh
/// WebAssembly instance unless its plugin opts into instance reuse, and even
/// then an instance serves only later calls of the same connection (values
/// worth keeping for those go in [`cache`]). Everything `get`, `delete`,
/// `get_metrics` and `get_logs` need travels in [`Connector::Meta`].
///
/// Export the implementation with [`export_connector!`].
pub trait Connector {
    /// What `create` returns and the other calls receive, like the resource
    /// meta of a Python connector.
    ///
    /// It is encoded as JSON and stored by the client with the task, so keep
    /// it small, and keep it readable by later versions of the connector
    /// (`#[serde(default)]` on new fields). A meta that cannot be decoded
    /// fails the call with [`Error::InvalidRequest`].
    type Meta: serde::Serialize + serde::de::DeserializeOwned;

    /// The connector's name and the task types it serves. Called once, when
    /// the host loads the component.
    fn metadata() -> Metadata;

    /// Starts the task on the external service and returns what later calls
    /// need to find it again.
    fn create(task: TaskRequest) -> Result<Self::Meta, Error>;

    /// Reports the task's state and, once it has succeeded, its outputs.
    fn get(meta: Self::Meta, ctx: &Context) -> Result<Resource, Error>;

    /// Cancels the task, or cleans up after it.
    fn delete(meta: Self::Meta, ctx: &Context) -> Result<(), Error>;

    /// Reports the task's metrics, one result per query. Not implemented
    /// unless overridden: the client then sees `UNIMPLEMENTED`.
    fn get_metrics(_meta: Self::Meta, _query: MetricsQuery) -> Result<Vec<MetricResult>, Error> {
        Err(Error::NotImplemented)
    }

    /// Reports a page of the task's logs. Not implemented unless overridden:
    /// the client then sees `UNIMPLEMENTED`.
    fn get_logs(_meta: Self::Meta, _query: LogsQuery) -> Result<LogsPage, Error> {
        Err(Error::NotImplemented)
    }
}

/// Exports a [`Connector`] implementation as the component's
/// `flyte:connector/connector` interface.
///
/// Use it once, in the connector crate (a `cdylib` built for
/// `wasm32-wasip2`), with the type implementing [`Connector`]:
///
/// ```ignore
/// flyte_connector_sdk::export_connector!(MyConnector);
/// ```
///
/// The connector crate needs no dependency on `wit-bindgen`. The exports
/// exist only when building for WebAssembly, so the same crate also builds
/// for the host: for its unit tests, and to run in process.
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            type __FlyteConnectorExport = $crate::__private::Adapter<$connector>;
            $crate::__private::bindings::__export_plugin!(
                __FlyteConnectorExport with_types_in $crate::__private::bindings
            );
        };
    };
}
