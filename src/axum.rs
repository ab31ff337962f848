//! axum integration (feature `axum`): the [`CorrelationId`] extractor and [`metrics_router`].
//!
//! The route label comes from axum's `MatchedPath` automatically when the layer is added with
//! `Router::layer`.

use axum::Router;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::StatusCode;
use http::request::Parts;

use crate::{CorrelationId, Obs};

/// Extracts the request's correlation ID. Rejects with 500 when the `mercenary_obs` layer is not
/// installed (a configuration mistake worth seeing); use `Option<CorrelationId>` to tolerate it.
///
/// ```
/// use mercenary_obs::CorrelationId;
///
/// async fn handler(id: CorrelationId) -> String {
///     format!("your request is {id}")
/// }
/// # let _ = axum::Router::<()>::new().route("/", axum::routing::get(handler));
/// ```
impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<CorrelationId>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "CorrelationId extractor used without the mercenary_obs layer",
        ))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<CorrelationId>().cloned())
    }
}

/// A router serving `GET /metrics` and `GET /debug/traces` (the in-memory ring of kept traces,
/// when no OTLP endpoint is set) for the global instance; merge it into your app:
///
/// ```
/// let app: axum::Router = axum::Router::new().merge(mercenary_obs::axum::metrics_router());
/// # let _ = app;
/// ```
pub fn metrics_router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Obs::global().metrics_router()
}

impl Obs {
    /// A router serving `GET /metrics` for this instance.
    pub fn metrics_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let obs = self.clone();
        Router::new()
            .route_service("/metrics", self.metrics_service())
            .route(
                "/debug/traces",
                axum::routing::get(move || {
                    let body = obs.recent_traces_json();
                    async move {
                        match body {
                            Some(json) => (
                                StatusCode::OK,
                                [(http::header::CONTENT_TYPE, "application/json")],
                                json,
                            ),
                            None => (
                                StatusCode::NOT_FOUND,
                                [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                                "no in-memory traces: traces go to the OTLP endpoint, or are off\n"
                                    .to_string(),
                            ),
                        }
                    }
                }),
            )
    }
}
