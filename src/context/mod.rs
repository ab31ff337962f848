//! The span context layer: every span's correlation ID, trace and span IDs and pre-rendered
//! fields, the recording of spans for the tail sampler, and the hand-off with the tower layer.
//!
//! It sits between the trace component (whose recorder and sampler it feeds) and the log
//! pipeline (whose formatter reads the context of each event's span).

pub(crate) mod current;
pub(crate) mod entries;
pub(crate) mod fields;
pub(crate) mod handoff;
pub(crate) mod layer;

#[cfg(test)]
mod tests;
