//! The two gRPC services, thin adapters: each RPC maps its request to a
//! connector request ([`mapping`]), finds the connector in the registry,
//! calls it and maps the answer back; every failure is turned into a
//! `tonic::Status` (and a metrics label) in [`ServiceError`].

mod connector_service;
mod error;
pub(crate) mod mapping;
mod metadata_service;

use std::sync::Arc;

use tokio::sync::watch;

use crate::{
    connector::{SharedConnector, TaskCategory},
    registry::Registry,
};

pub use connector_service::AsyncConnector;
pub use error::ServiceError;
pub use metadata_service::ConnectorMetadata;

/// The registry as the services see it: a snapshot that a reload can replace.
pub type RegistryView = watch::Receiver<Arc<Registry>>;

fn find_connector(
    registry: &RegistryView,
    category: &TaskCategory,
) -> Result<SharedConnector, ServiceError> {
    registry
        .borrow()
        .get(category)
        .cloned()
        .ok_or_else(|| ServiceError::NotFound(category.name.clone()))
}
