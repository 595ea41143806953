//! A loaded connector component as the rest of the host sees it: a
//! [`Connector`] whose every call runs in a fresh instance, or, if its
//! manifest opts in, in one that served the same connection before.

use async_trait::async_trait;

use super::{
    bindings,
    call::{Caller, GuestCall, enter},
    return_limits::ReturnLimits,
};
use crate::{
    connector::{
        Connector, ConnectorError, ConnectorInfo, CreateRequest, Deadline, DeleteRequest,
        GetRequest, LogsPage, LogsRequest, MetricResult, MetricsRequest, Operation, Resource,
    },
    file_stamp::FileRead,
};

/// A connector component, compiled and pre-linked. By default every call
/// runs in a fresh instance and nothing survives from one call to the next;
/// with `instance_reuse = "connection"` what a call leaves in its instance
/// may be seen by later calls with the same connection map, never by others.
pub struct WasmConnector {
    pub(super) info: ConnectorInfo,
    pub(super) source: String,
    /// Files the capabilities read at load (certificates, credentials).
    pub(super) files_read: Vec<FileRead>,
    pub(super) caller: Caller,
    pub(super) return_limits: ReturnLimits,
}

/// Calls export `$function` of the guest's connector interface with
/// `$request`, for `$tenant` (see [`Caller::complete_connection`]), mapping
/// the guest's own error variant to a [`ConnectorError`]: alone in its
/// instance for a component of the sync world, or among others of its
/// tenant for one of the async world (the same export, `async`).
macro_rules! call_guest {
    ($self:ident, $operation:expr, $deadline:ident, $tenant:expr, $function:ident, $request:expr) => {{
        let request = $request;
        let held = bindings::CallRequest::held_bytes(&request);
        let output_prefix = bindings::CallRequest::output_prefix(&request);
        let call = if $self.caller.is_concurrent() {
            GuestCall::Concurrent(Box::new(move |accessor, plugin, call| {
                Box::pin(async move {
                    let func = plugin.flyte_connector_async_connector().$function();
                    let (result,) = enter(accessor, func, (request,), call).await?;
                    Ok(result.map_err(bindings::error))
                })
            }))
        } else {
            GuestCall::Sync(Box::new(move |store, exports| {
                Box::pin(async move {
                    let func = exports.sync()?.flyte_connector_connector().$function();
                    let (result,) = func.call_async(&mut *store, (&request,)).await?;
                    Ok(result.map_err(bindings::error))
                })
            }))
        };
        $self
            .caller
            .call(
                $operation.guest_function(),
                $deadline,
                $tenant,
                (held, output_prefix),
                call,
            )
            .await
    }};
}

#[async_trait]
impl Connector for WasmConnector {
    fn info(&self) -> &ConnectorInfo {
        &self.info
    }

    fn source(&self) -> &str {
        &self.source
    }

    fn files_read(&self) -> &[FileRead] {
        &self.files_read
    }

    async fn create(
        &self,
        mut request: CreateRequest,
        deadline: Deadline,
    ) -> Result<Vec<u8>, ConnectorError> {
        let tenant = self.caller.complete_connection(&mut request.connection);
        let meta = call_guest!(
            self,
            Operation::Create,
            deadline,
            tenant,
            func_create,
            bindings::create_request(request)
        )?;
        self.return_limits.check_resource_meta(&meta)?;
        Ok(meta)
    }

    async fn get(
        &self,
        mut request: GetRequest,
        deadline: Deadline,
    ) -> Result<Resource, ConnectorError> {
        let tenant = self.caller.complete_connection(&mut request.connection);
        let resource = call_guest!(
            self,
            Operation::Get,
            deadline,
            tenant,
            func_get,
            bindings::get_request(request)
        )?;
        self.return_limits.check_resource(&resource)?;
        bindings::resource(resource)
    }

    async fn delete(
        &self,
        mut request: DeleteRequest,
        deadline: Deadline,
    ) -> Result<(), ConnectorError> {
        let tenant = self.caller.complete_connection(&mut request.connection);
        call_guest!(
            self,
            Operation::Delete,
            deadline,
            tenant,
            func_delete,
            bindings::delete_request(request)
        )
    }

    async fn get_metrics(
        &self,
        mut request: MetricsRequest,
        deadline: Deadline,
    ) -> Result<Vec<MetricResult>, ConnectorError> {
        // Completed from the pod, but never a reused instance's: metrics
        // and logs calls always run fresh.
        let _tenant = self.caller.complete_connection(&mut request.connection);
        let results = call_guest!(
            self,
            Operation::GetMetrics,
            deadline,
            None,
            func_get_metrics,
            bindings::metrics_request(request)
        )?;
        self.return_limits.check_metrics(&results)?;
        bindings::metric_results(results)
    }

    async fn get_logs(
        &self,
        mut request: LogsRequest,
        deadline: Deadline,
    ) -> Result<LogsPage, ConnectorError> {
        let _tenant = self.caller.complete_connection(&mut request.connection);
        let page = call_guest!(
            self,
            Operation::GetLogs,
            deadline,
            None,
            func_get_logs,
            bindings::logs_request(request)
        )?;
        self.return_limits.check_log_page(&page)?;
        Ok(bindings::logs_page(page))
    }
}
