//! The object stores' HTTP client: the host's own connections (the
//! platform's CA roots, the `[storage]` section's CA file, the proxies of
//! the server's environment), pooled, in place of the reqwest client
//! `object_store` would otherwise bring with a TLS stack of its own.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};

use super::super::outbound_http::Connector;

/// How long a store may take to answer a request's head.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an idle pooled connection stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Hands `object_store` the host's client.
#[derive(Clone)]
pub(super) struct StoreHttp {
    client: Client<Connector, HttpRequestBody>,
}

impl std::fmt::Debug for StoreHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHttp").finish_non_exhaustive()
    }
}

impl StoreHttp {
    pub(super) fn new(connector: Connector) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(IDLE_TIMEOUT)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .set_host(true)
                .build(connector),
        }
    }
}

impl HttpConnector for StoreHttp {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(self.clone()))
    }
}

/// An error of the client as `object_store` classifies them: connecting
/// and sending are retried, the rest is not.
fn classify(err: &hyper_util::client::legacy::Error) -> HttpErrorKind {
    if err.is_connect() {
        HttpErrorKind::Connect
    } else {
        HttpErrorKind::Request
    }
}

#[async_trait::async_trait]
impl HttpService for StoreHttp {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let pending = self.client.request(request);
        let response = match tokio::time::timeout(RESPONSE_TIMEOUT, pending).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(HttpError::new(classify(&err), err)),
            Err(elapsed) => return Err(HttpError::new(HttpErrorKind::Timeout, elapsed)),
        };
        let (parts, body) = response.into_parts();
        let body = body.map_err(|err| HttpError::new(HttpErrorKind::Interrupted, err));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}
