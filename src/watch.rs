//! What perfproxy watches beside the traffic: the backend's [`database`]
//! (health, slow queries from pg_stat_statements, missing indexes,
//! migrations) and the dependencies' [`health`] (upstream, Redis, PostgreSQL
//! probes behind `/health`).

pub mod database;
pub(crate) mod health;
