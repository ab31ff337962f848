//! Feature `reqwest`: the client instrumentation as a [`reqwest_middleware`] middleware.
//!
//! ```no_run
//! # fn f() {
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(mercenary_obs::reqwest::Middleware::default())
//!     .build();
//! # let _ = client; }
//! ```
//!
//! Each call then gets what [`crate::ClientLayer`] gives a tower client: a CLIENT span in the
//! current trace, `traceparent`/`tracestate`/`x-request-id` headers, an observation of
//! `http_client_request_duration_seconds`, and downstream-aware keeping. Add it last
//! (innermost) when a retry middleware is in the chain, so each attempt is its own span.

use std::fmt;
use std::sync::Arc;

use http::Extensions;
use reqwest_middleware::{Next, Result};

use crate::client::ClientState;
use crate::client::call::ClientCall;
use crate::client::target::{Target, error_type};
use crate::obs::Obs;

/// The `reqwest-middleware` middleware. `Middleware::default()` is bound to the global instance
/// (the one `init()` installed: build the client after `init()`); [`Obs::reqwest_middleware`]
/// to another.
#[derive(Clone)]
pub struct Middleware {
    state: Arc<ClientState>,
}

impl fmt::Debug for Middleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Middleware").finish_non_exhaustive()
    }
}

impl Default for Middleware {
    fn default() -> Self {
        Obs::global().reqwest_middleware()
    }
}

impl Obs {
    /// The `reqwest-middleware` middleware bound to this instance (feature `reqwest`).
    pub fn reqwest_middleware(&self) -> Middleware {
        Middleware {
            state: self.inner.client.clone(),
        }
    }
}

/// `error.type` of a failed reqwest call.
fn reqwest_error_type(error: &reqwest_middleware::Error) -> &'static str {
    match error {
        reqwest_middleware::Error::Reqwest(e) => {
            let found = error_type(e, "");
            if !found.is_empty() {
                found
            } else if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "reqwest::Error"
            }
        }
        reqwest_middleware::Error::Middleware(e) => error_type(e.as_ref(), "middleware"),
    }
}

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Middleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<reqwest::Response> {
        let url = req.url().clone();
        let method = req.method().clone();
        let target = Target {
            scheme: url.scheme(),
            host: url.host_str().unwrap_or(""),
            port: url.port(),
            path: url.path(),
        };
        let call = ClientCall::start(&self.state, &method, &target, req.headers_mut(), false);
        // The CLIENT span is not entered while the call runs: nothing of ours logs inside it,
        // and entering costs a registry push and pop per poll (events the transport logs
        // carry the request's span).
        let out = next.run(req, extensions).await;
        match &out {
            Ok(response) => call.finish_response(response.status(), response.headers()),
            Err(e) => call.finish_error(reqwest_error_type(e)),
        }
        out
    }
}
