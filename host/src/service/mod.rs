//! The two gRPC services, thin adapters: each task RPC ([`rpc`]) decodes
//! its message into a connector request ([`mapping`]), finds the connector
//! in one snapshot of the registry, calls it and maps the answer back;
//! every failure is turned into a `tonic::Status` (and a metrics label) in
//! [`ServiceError`].

mod connector_service;
mod error;
mod log_limit;
pub(crate) mod mapping;
mod metadata_service;
mod rpc;

use std::sync::Arc;

use tokio::sync::watch;

use crate::registry::Registry;

pub use connector_service::AsyncConnector;
pub use error::{Failure, ServiceError};
pub use metadata_service::ConnectorMetadata;

/// The registry as the services see it: a snapshot that a reload can replace.
pub type RegistryView = watch::Receiver<Arc<Registry>>;
