//! `flyteidl2.connector.ConnectorMetadataService`: which connectors are
//! loaded and which task types each serves.

use tonic::{Request, Response, Status};

use super::{RegistryView, ServiceError};
use crate::proto::connector as pb;

/// The metadata service.
#[derive(Clone)]
pub struct ConnectorMetadata {
    registry: RegistryView,
}

impl ConnectorMetadata {
    /// Describes the connectors of `registry`.
    pub fn new(registry: RegistryView) -> Self {
        Self { registry }
    }

    fn connectors(&self) -> Vec<pb::Connector> {
        self.registry
            .borrow()
            .connectors()
            .into_iter()
            .map(|(name, categories)| pb::Connector {
                name,
                supported_task_categories: categories
                    .into_iter()
                    .map(|c| pb::TaskCategory {
                        name: c.name,
                        version: c.version,
                    })
                    .collect(),
            })
            .collect()
    }
}

#[tonic::async_trait]
impl pb::connector_metadata_service_server::ConnectorMetadataService for ConnectorMetadata {
    async fn get_connector(
        &self,
        request: Request<pb::GetConnectorRequest>,
    ) -> Result<Response<pb::GetConnectorResponse>, Status> {
        let name = request.into_inner().name;
        let connector = self
            .connectors()
            .into_iter()
            .find(|c| c.name == name)
            .ok_or(ServiceError::UnknownConnector(name))?;
        Ok(Response::new(pb::GetConnectorResponse {
            connector: Some(connector),
        }))
    }

    async fn list_connectors(
        &self,
        _request: Request<pb::ListConnectorsRequest>,
    ) -> Result<Response<pb::ListConnectorsResponse>, Status> {
        Ok(Response::new(pb::ListConnectorsResponse {
            connectors: self.connectors(),
        }))
    }
}
