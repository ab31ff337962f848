//! The request path, as a tower layer: [`ObsLayer`] → [`ObsService`] → [`ResponseFuture`] →
//! [`ResponseBody`].
//!
//! It holds a [`state::RequestState`] (the handles it needs: RED metrics, the subscriber to
//! make current, the sampler, Sentry) rather than the instance, and hands the request's trace
//! IDs and access-line extras to the subscriber through `crate::context::handoff`.

pub(crate) mod abuse;
mod body;
mod future;
pub(crate) mod options;
mod service;
pub(crate) mod state;

use std::fmt;
use std::sync::Arc;

pub use self::abuse::Principal;
pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::service::ObsService;

use self::state::RequestState;
use crate::traces::record::RequestFields;

/// What the request span says of its request: its method label, route and URI. One per
/// request, shared by the [`future::RequestRecord`] and (as [`RequestFields`]) the span's
/// record, which makes them attributes or JSON only when needed.
pub(crate) struct RequestInfo {
    pub(crate) method: &'static str,
    pub(crate) route: Route,
    pub(crate) uri: http::Uri,
}

impl RequestFields for RequestInfo {
    fn method(&self) -> &'static str {
        self.method
    }

    fn route(&self) -> &str {
        self.route.as_str()
    }

    fn path(&self) -> &str {
        self.uri.path()
    }
}

/// The route template of a request (`/users/{id}`), never the raw path.
///
/// Returned by a [`RouteExtractor`]; with the `axum` feature the layer takes it from axum's
/// `MatchedPath`. Requests without one get the empty route.
#[derive(Clone)]
pub struct Route(RouteRepr);

#[derive(Clone)]
enum RouteRepr {
    Static(&'static str),
    Shared(Arc<str>),
    #[cfg(feature = "axum")]
    Matched(axum::extract::MatchedPath),
}

impl Route {
    /// The empty route, used for requests that matched no route.
    pub const UNMATCHED: Route = Route(RouteRepr::Static(""));

    /// The template as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            RouteRepr::Static(s) => s,
            RouteRepr::Shared(s) => s,
            #[cfg(feature = "axum")]
            RouteRepr::Matched(m) => m.as_str(),
        }
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Route").field(&self.as_str()).finish()
    }
}

impl From<&'static str> for Route {
    fn from(s: &'static str) -> Self {
        Route(RouteRepr::Static(s))
    }
}

impl From<Arc<str>> for Route {
    fn from(s: Arc<str>) -> Self {
        Route(RouteRepr::Shared(s))
    }
}

impl From<String> for Route {
    fn from(s: String) -> Self {
        Route(RouteRepr::Shared(Arc::from(s)))
    }
}

#[cfg(feature = "axum")]
impl From<axum::extract::MatchedPath> for Route {
    fn from(m: axum::extract::MatchedPath) -> Self {
        Route(RouteRepr::Matched(m))
    }
}

/// Supplies the route template of a request, for frameworks other than axum (or to override
/// axum's `MatchedPath`).
///
/// It must return a template from a fixed set (`/users/{id}`), never the raw path: the route is
/// a metric label, and raw paths chosen by clients would create one series per path. Return
/// `None` for requests that matched no route.
///
/// Any `Fn(&http::request::Parts) -> Option<Route>` is an extractor:
///
/// ```
/// use mercenary_obs::Route;
///
/// let layer = mercenary_obs::layer().route_extractor(|parts: &http::request::Parts| {
///     parts.uri.path().starts_with("/users/").then(|| Route::from("/users/{id}"))
/// });
/// # let _ = layer;
/// ```
pub trait RouteExtractor: Send + Sync + 'static {
    /// The route template of the request, or `None` when it matched no route.
    fn route(&self, parts: &http::request::Parts) -> Option<Route>;
}

impl<F> RouteExtractor for F
where
    F: Fn(&http::request::Parts) -> Option<Route> + Send + Sync + 'static,
{
    fn route(&self, parts: &http::request::Parts) -> Option<Route> {
        self(parts)
    }
}

/// The tower layer that observes every request: correlation ID, RED metrics, access line, and
/// the request span that handler logs and child spans inherit.
///
/// Get one from [`crate::layer()`] (the global instance) or [`Obs::layer`](crate::Obs::layer). With axum, add it
/// with `Router::layer` (not `route_layer`, which skips unmatched requests) so the route label
/// comes from `MatchedPath`.
///
/// ```
/// use axum::{Router, routing::get};
///
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "ok" }))
///     .layer(mercenary_obs::layer());
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct ObsLayer {
    state: Arc<RequestState>,
    routes: Option<Arc<dyn RouteExtractor>>,
}

impl fmt::Debug for ObsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObsLayer")
            .field("scoped", &self.state.scope.is_some())
            .field("custom_routes", &self.routes.is_some())
            .finish()
    }
}

impl ObsLayer {
    /// A layer over `state` (which keeps the instance's pipelines running).
    pub(crate) fn from_state(state: Arc<RequestState>) -> Self {
        Self {
            state,
            routes: None,
        }
    }

    /// Uses `extractor` for the route template instead of axum's `MatchedPath`.
    pub fn route_extractor(mut self, extractor: impl RouteExtractor) -> Self {
        self.routes = Some(Arc::new(extractor));
        self
    }
}

impl<S> tower::Layer<S> for ObsLayer {
    type Service = ObsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObsService::new(inner, self.state.clone(), self.routes.clone())
    }
}
