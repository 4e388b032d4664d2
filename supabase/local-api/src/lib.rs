//! Haven's local Supabase stand-in: one loopback HTTP server with PostgREST semantics under
//! `/rest/v1` (postrust-server as a library) and a dev-only GoTrue subset under `/auth/v1`.
//!
//! Exists because hosted Supabase is what production uses, while newcomers, tests and CI need
//! the same HTTP contract on one machine without Docker or internet (shared/spec/local-stack.md).
//! A library as well as a binary so its pieces are unit-tested in isolation.

pub mod api_keys;
pub mod auth;
pub mod config;
pub mod gates;
pub mod null_args;
pub mod rest;
pub mod server;
pub mod signing;
