//! Quiver's end-to-end tests, in one binary (one link, shared fixtures):
//!
//! - `definitions`: the parser and validation cases under `tests/definitions/*.case`;
//! - `cli`: the built `quiver` binary on temporary repositories (the registry's cases on
//!   both SQLite and PostgreSQL);
//! - `team`: a PostgreSQL registry shared by several checkouts and servers.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a test failure
mod cli;
mod definitions;
mod object_storage;
mod on_demand;
mod on_demand_property;
mod online;
mod pit;
#[path = "../support/postgres_database.rs"]
mod postgres_database;
mod readme;
#[path = "../support/redis_cluster.rs"]
mod redis_cluster;
#[path = "../support/redis_server.rs"]
mod redis_server;
mod reliability;
#[path = "../support/s3_server.rs"]
mod s3_server;
mod support;
mod team;
mod window_property;
mod windows;
