//! The bottom layer: what every component shares and nothing else.
//!
//! Errors, IDs, HTTP naming and the one [`Outcome`](outcome::Outcome) classification, the names
//! of every metric, label and log target, text escaping, redaction and time formatting, the
//! service resource, and the plumbing of settings (code over environment over default). Nothing
//! here imports another module of the crate.

pub mod env;
pub(crate) mod error;
pub(crate) mod escape;
pub(crate) mod exemplar;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod ids;
pub mod names;
pub(crate) mod outcome;
pub(crate) mod redact;
pub(crate) mod render;
pub(crate) mod resource;
pub(crate) mod time;
