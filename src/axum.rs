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

/// Serves the global instance's admin router on its admin address
/// (`MERCENARY_OBS_ADMIN_ADDR` or [`ObsBuilder::admin_addr`](crate::ObsBuilder::admin_addr)),
/// in a task of the current tokio runtime. See [`Obs::serve_admin`].
pub async fn serve_admin() -> Result<Option<std::net::SocketAddr>, crate::Error> {
    Obs::global().serve_admin().await
}

impl Obs {
    /// The admin router: `GET /metrics`, `GET /debug/traces` and `GET /healthz`, for a listener
    /// of its own (not behind the application's layer, so scrapes are not application traffic).
    pub fn admin_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.metrics_router()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
    }

    /// Binds the admin address (`MERCENARY_OBS_ADMIN_ADDR` or
    /// [`ObsBuilder::admin_addr`](crate::ObsBuilder::admin_addr)) and serves
    /// [`admin_router`](Self::admin_router) there in a task of the current tokio runtime.
    /// Returns the bound address (useful with port 0), `Ok(None)` when no admin address is
    /// set, and an error naming the setting when it cannot be bound. Serve `/metrics` on the
    /// application's port only when this returns `None`:
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), mercenary_obs::Error> {
    /// let obs = mercenary_obs::Obs::builder().from_env().build()?;
    /// let mut app: axum::Router = axum::Router::new();
    /// if obs.serve_admin().await?.is_none() {
    ///     app = app.merge(obs.metrics_router());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn serve_admin(&self) -> Result<Option<std::net::SocketAddr>, crate::Error> {
        let Some(addr) = self.inner.request.admin_addr else {
            return Ok(None);
        };
        let invalid = |e: std::io::Error| crate::Error::InvalidSetting {
            setting: "MERCENARY_OBS_ADMIN_ADDR / ObsBuilder::admin_addr",
            value: addr.to_string(),
            expected: format!("an address this process can listen on ({e})"),
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(invalid)?;
        let bound = listener.local_addr().map_err(invalid)?;
        let app: Router = self.admin_router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Some(bound))
    }

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
