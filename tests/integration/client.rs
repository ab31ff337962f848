//! Outgoing-call instrumentation: the tower client layer and the reqwest middleware.
