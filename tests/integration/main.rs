//! The integration tests that need no process of their own, in one test binary (one link
//! instead of one per file). Tests that install a global instance or subscriber (`init()`) keep
//! a binary each: `tests/audit.rs`, `tests/global.rs`, `tests/global_conflict.rs`,
//! `tests/sentry_global.rs`, `tests/shutdown.rs`; so do `tests/business.rs`, whose assertions
//! read the process-wide default instance the macros use before `init()`, and the trybuild
//! test. Where such a binary holds several tests that each need the global instance
//! (`tests/audit.rs`), each one runs in a child process of its own (`common::isolated`), so they
//! do not share it under `cargo test` either.
//!
//! Every test here builds its own instance with `Obs::builder().build()`, so they run side by
//! side under `cargo test` (threads in one process) and under nextest (a process each) alike.

#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod access_line;
mod admin;
mod audit_stall;
mod client;
mod correlation;
mod demo;
mod distributed;
mod env_vars;
mod exemplars;
mod faults;
mod grpc;
mod instances;
mod layering;
mod logs;
mod metrics;
mod monitoring;
mod openmetrics;
mod otlp;
mod otlp_grpc_retry;
mod otlp_retry;
mod otlp_tls;
mod properties;
mod rpc;
mod sentry;
mod sqlx_demo;
mod sqlx_postgres;
mod sqlx_sqlite;
mod sqlx_support;
mod stack;
mod tower_service;
mod traces;
