//! perfproxy: a sidecar reverse proxy that makes any web backend observable
//! and faster without touching its code. The contract (flags, variables,
//! keys, JSON fields, headers, exit codes) is documented in the README.
//!
//! # Layout
//!
//! - [`config`]: flags, environment, TOML file → one validated [`config::Config`]; errors name the key.
//! - [`settings`]: the bottom layer: the config file's shape ([`settings::Settings`]) and
//!   [`settings::ConfigError`], which the components that parse their own keys import (never
//!   `config`, which imports them).
//! - [`server`]: listeners, the acceptor, thread-per-core workers, limits, graceful shutdown.
//! - [`drain`]: a worker's open connections, woken to finish and close when it stops.
//! - [`linger`]: lingering close of client connections, and whether a hyper connection is busy.
//! - [`express`]: the express lane: plain HTTP/1.1 requests proxied as bytes (heads parsed once,
//!   rewritten in a buffer), fresh memory hits written from stored bytes and plain misses stored
//!   as they are relayed; endpoints and the cache's other lookups go to [`proxy`], the unusual to
//!   hyper.
//! - [`proxy`]: one request on `http` types, top to bottom: own endpoints → route → checks → cache
//!   or upstream → response (hyper's connections, and what the express lane asks it to answer).
//! - [`pipeline`]: the request's phases written once for both lanes (refusals, upstream failures).
//! - [`forward`]: the upstream exchange on `http` types (time-boxed, head checked and rewritten),
//!   below the request path and the cache.
//! - [`upstream`]: each worker's pool of upstream connections, shared by both lanes.
//! - [`http1`]: the HTTP/1 rulebook both lanes apply (field roles, lists, lengths, status
//!   validity, framing, forwarding, retry and cache eligibility).
//! - [`headers`]: the rulebook applied to `HeaderMap`s (the hyper path).
//! - [`access_log`]: `[access_log]`, one line per request, written off the request path.
//! - [`trace`]: W3C Trace Context and OpenTelemetry spans, exported over OTLP/HTTP off the request
//!   path (the exporter's own thread and bounded queue).
//! - [`clients`]: who a request is from (`X-Forwarded-For` walked past `trusted_proxies`, or a
//!   header's value, shown hashed) and the top clients by request rate.
//! - [`limits`]: `[[rate_limits]]`, counted per key in pingora-limits' sketches; over a limit, 429.
//! - [`access`]: CIDR lists (`trusted_proxies`, `endpoints.allow`) and the admin token check.
//! - [`body`]: the streamed request and response bodies.
//! - [`error`]: `ProxyError` and the one place it becomes a 400/502/504.
//! - [`cache`]: the two-layer response cache (memory in front of Redis), RFC 9111 policy, purge.
//! - [`cluster`]: the cluster view: each instance's figures published to Redis, merged histograms.
//! - [`history`]: per-minute rollups in PostgreSQL, `/performance/history`, the in-memory series.
//! - [`routes`]: route patterns, path normalisation, the bounded label table.
//! - [`metrics`] and [`prometheus`]: per-route HdrHistograms, the semantic-convention histogram
//!   with its exemplars; `/metrics` in the classic format or OpenMetrics.
//! - [`admin`]: perfproxy's own endpoints (`/health/live` …).
//! - [`state`]: process-wide `Shared` and per-thread `Worker` state.
//! - [`redact`]: secrets out of URLs before they are shown.
//! - [`telemetry`]: logging setup.

#![forbid(unsafe_code)]

pub(crate) mod access;
pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod alerts;
pub(crate) mod body;
pub mod cache;
pub(crate) mod clients;
pub(crate) mod cluster;
pub mod config;
pub mod database;
pub(crate) mod drain;
pub(crate) mod error;
pub(crate) mod express;
pub(crate) mod forward;
pub(crate) mod grpc;
pub(crate) mod headers;
pub(crate) mod health;
pub(crate) mod history;
pub(crate) mod http1;
pub(crate) mod http2;
pub(crate) mod limits;
pub(crate) mod linger;
pub(crate) mod metrics;
pub(crate) mod performance;
pub(crate) mod pipeline;
pub(crate) mod prometheus;
pub(crate) mod proxy;
pub mod redact;
pub(crate) mod reload;
pub(crate) mod routes;
pub mod server;
pub mod settings;
pub(crate) mod state;
pub(crate) mod system;
pub mod telemetry;
pub mod trace;
pub(crate) mod upstream;
