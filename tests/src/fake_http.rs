//! What the fakes share: a [`Serving`] handle that serves a fake on a free
//! loopback port until it drops, the [`Ledger`] of what a fake received and
//! the routes that serve it, and the authorize-then-count step every API
//! request takes ([`FakeService::admit`]).
//!
//! How a fake is served (plain or TLS, which HTTP versions, what happens to
//! its connections) is an [`endpoint`](crate::endpoint)'s [`Serve`];
//! [`Serving::serve_also`] serves a running fake on a second port (TLS in
//! front of a plain fake, say). The proxy a client may reach the fakes
//! through is [`FakeProxy`](crate::proxy::FakeProxy).
//!
//! Each fake module ([`fake_databricks`](crate::fake_databricks),
//! [`fake_bigquery`](crate::fake_bigquery),
//! [`fake_snowflake`](crate::fake_snowflake)) has a `Fake`: a cheap,
//! cloneable handle on the fake's state that its handlers share, and a
//! [`FakeService`]. Its public handle (`FakeDatabricks`, …) is the
//! [`Serving`] of that `Fake`, with the fake's own accessors added. Besides
//! its API, every fake serves:
//!
//! - `GET /__fake/calls` → the fake's counters, its `Calls`
//! - `GET /__fake/submitted` → the submitted bodies with their user agents,
//!   `[{"body", "user_agent"}]`

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, Version},
    response::Response,
    routing::get,
};
use serde::Serialize;
use serde_json::Value;

use crate::endpoint::{Accepted, Endpoint, Serve, bind};

/// A fake as its handlers see it: a cheap handle on the fake's state, cloned
/// into each request.
pub trait FakeService: Clone + Send + Sync + 'static {
    /// The fake's request counters, by endpoint.
    type Calls: Copy + Serialize + Send + 'static;

    /// What the fake received.
    fn ledger(&self) -> &Ledger<Self::Calls>;

    /// Checks a request's credentials, counting a refusal; the error is the
    /// answer the real service gives.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Box<Response>>;

    /// Authorizes a request to an API endpoint, then counts it in the
    /// counter `counter` picks; the error is the refusal.
    fn admit(
        &self,
        headers: &HeaderMap,
        counter: impl FnOnce(&mut Self::Calls) -> &mut usize,
    ) -> Result<(), Box<Response>> {
        self.authorize(headers)?;
        self.ledger().count(counter);
        Ok(())
    }
}

/// A fake serving on a free loopback port; it stops when dropped.
pub struct Serving<F> {
    endpoint: Endpoint,
    app: Router,
    fake: F,
}

impl<F: FakeService> Serving<F> {
    /// Binds a free port of 127.0.0.1 and serves there `routes` (the fake's
    /// API) and the `/__fake/…` routes, on the fake `fake` makes knowing the
    /// address. `name` names the fake when the port cannot be bound. It
    /// serves plain HTTP and keeps connections alive ([`Serve::plain`]).
    pub async fn serve(name: &str, routes: Router<F>, fake: impl FnOnce(SocketAddr) -> F) -> Self {
        Self::serve_with(name, routes, fake, Serve::plain()).await
    }

    /// Like [`Serving::serve`], served as `how` says: over TLS, HTTP/1.1
    /// only, closing or dropping connections.
    pub async fn serve_with(
        name: &str,
        routes: Router<F>,
        fake: impl FnOnce(SocketAddr) -> F,
        how: Serve,
    ) -> Self {
        let listener = bind(name).await;
        let addr = listener.local_addr().expect("the fake's address");
        let fake = fake(addr);
        let app = routes
            .with_state(fake.clone())
            .merge(fake.ledger().routes());
        let endpoint = Endpoint::start(listener, app.clone(), how);
        Self {
            endpoint,
            app,
            fake,
        }
    }

    /// Serves this fake also on another free loopback port, as `how` says
    /// (TLS in front of a fake started plain, say), until the returned
    /// endpoint drops. Both ports share the fake's state; the URLs the fake
    /// writes into its answers still name its first port.
    pub async fn serve_also(&self, how: Serve) -> Endpoint {
        Endpoint::serve(self.app.clone(), how).await
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr()
    }

    /// The root of the fake's API: `http://127.0.0.1:PORT` when plain,
    /// `https://localhost:PORT` over TLS (the host is a [`UrlHost`]).
    pub fn base_url(&self) -> String {
        self.endpoint.base_url()
    }

    /// Where the fake serves, with the record of its connections.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The connections accepted so far, in order (see [`Endpoint::connections`]).
    pub fn connections(&self) -> Vec<Accepted> {
        self.endpoint.connections()
    }

    /// How many connections were accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.endpoint.connections_accepted()
    }

    /// The HTTP version of each connection that carried a request, in order
    /// (see [`Endpoint::http_versions`]).
    pub fn http_versions(&self) -> Vec<Version> {
        self.endpoint.http_versions()
    }

    /// Whether each TLS connection presented a client certificate, in order
    /// (see [`Endpoint::client_certificates`]).
    pub fn client_certificates(&self) -> Vec<bool> {
        self.endpoint.client_certificates()
    }

    /// Requests received so far.
    pub fn calls(&self) -> F::Calls {
        self.fake.ledger().calls()
    }

    /// The `User-Agent` of each submission, in order (empty when missing).
    pub fn user_agents(&self) -> Vec<String> {
        self.fake.ledger().user_agents()
    }

    /// The fake, as its handlers share it.
    pub(crate) fn fake(&self) -> &F {
        &self.fake
    }
}

/// A request body as a fake received it.
#[derive(Debug, Clone, Serialize)]
pub struct Submitted {
    /// The body, as JSON.
    pub body: Value,
    /// The request's `User-Agent` (empty when missing).
    pub user_agent: String,
    /// The request's W3C `traceparent`, when it carried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Default)]
struct Books<C> {
    calls: C,
    submitted: Vec<Submitted>,
}

/// What a fake received: its counters and the bodies submitted to it, in
/// order. Clones share one record.
#[derive(Clone, Default)]
pub struct Ledger<C>(Arc<Mutex<Books<C>>>);

impl<C: Copy + Serialize + Send + 'static> Ledger<C> {
    fn books(&self) -> MutexGuard<'_, Books<C>> {
        lock(&self.0)
    }

    /// Adds one to the counter `counter` picks, and gives its new value.
    pub fn count(&self, counter: impl FnOnce(&mut C) -> &mut usize) -> usize {
        let mut books = self.books();
        let count = counter(&mut books.calls);
        *count += 1;
        *count
    }

    /// The counters.
    pub fn calls(&self) -> C {
        self.books().calls
    }

    /// Keeps `body`, submitted with `headers`.
    pub fn record(&self, body: Value, headers: &HeaderMap) {
        let user_agent = user_agent(headers);
        let traceparent = headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        self.books().submitted.push(Submitted {
            body,
            user_agent,
            traceparent,
        });
    }

    /// The submissions, in order.
    pub fn submitted(&self) -> Vec<Submitted> {
        self.books().submitted.clone()
    }

    /// The bodies submitted, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.books()
            .submitted
            .iter()
            .map(|s| s.body.clone())
            .collect()
    }

    /// The `User-Agent` of each submission, in order (empty when missing).
    pub fn user_agents(&self) -> Vec<String> {
        self.books()
            .submitted
            .iter()
            .map(|s| s.user_agent.clone())
            .collect()
    }

    /// `GET /__fake/calls` and `GET /__fake/submitted`, serving this ledger.
    fn routes(&self) -> Router {
        Router::new()
            .route("/__fake/calls", get(served_calls::<C>))
            .route("/__fake/submitted", get(served_submitted::<C>))
            .with_state(self.clone())
    }
}

async fn served_calls<C: Copy + Serialize + Send + 'static>(
    State(ledger): State<Ledger<C>>,
) -> Json<C> {
    Json(ledger.calls())
}

async fn served_submitted<C: Copy + Serialize + Send + 'static>(
    State(ledger): State<Ledger<C>>,
) -> Json<Vec<Submitted>> {
    Json(ledger.submitted())
}

/// The `User-Agent` of a request (empty when missing or not text).
fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Locks `state`; a handler that panicked holding it leaves it usable.
pub fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The step of `script` after `polls` polls, counting this one: a script
/// stays on its last step once there.
pub fn advance<T: Copy>(script: &[T], polls: &mut usize) -> T {
    let step = script[(*polls).min(script.len() - 1)];
    *polls += 1;
    step
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// A client for the fakes' own tests.
#[cfg(test)]
pub(crate) mod client {
    use serde_json::Value;

    /// An agent that gives error statuses as responses.
    pub(crate) fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// Status and JSON body (Null when the body is not JSON).
    pub(crate) fn reply(
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> (u16, Value) {
        let mut response = response.expect("a response");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// What the fake at `base_url` serves at `/__fake/calls` and at
    /// `/__fake/submitted`.
    pub(crate) fn served(base_url: &str) -> (Value, Value) {
        let agent = agent();
        let get = |path: &str| reply(agent.get(format!("{base_url}{path}")).call()).1;
        (get("/__fake/calls"), get("/__fake/submitted"))
    }
}
