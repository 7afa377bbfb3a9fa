//! perfproxy: a sidecar reverse proxy that makes any web backend observable
//! and faster without touching its code. The contract (flags, variables,
//! keys, JSON fields, headers, exit codes) is documented in the README and
//! `docs/`.
//!
//! # Layout
//!
//! The crate is layered; a layer imports only the layers below it (checked by
//! `scripts/module-graph.py` in CI). Top to bottom:
//!
//! - [`runtime`]: the process: listeners, worker threads, background tasks, reload, logging.
//! - [`lanes`]: the codecs in front of the request path: the express lane (byte-level HTTP/1.1),
//!   hyper (HTTP/2 and what the express lane hands off), draining and lingering close.
//! - [`pipeline`]: the one request path both lanes call: endpoints → route → checks → cache or
//!   upstream → answer and record.
//! - [`admin`]: perfproxy's own endpoints and documents (`/performance`, `/metrics`, `/health`,
//!   the dashboard, `/performance/history`).
//! - [`shared`]: what the request path and the endpoints share: `Shared`, `Worker`, `Client`, the
//!   bodies, `ProxyError` and its one mapping to HTTP.
//! - [`watch`]: the backend's database and the dependencies' health probes.
//! - [`config`]: flags, environment, TOML file → one validated [`config::Config`]; errors name the
//!   key.
//! - [`observe`]: metrics, tracing, the access log, alerts, history, the cluster view.
//! - [`admit`]: access lists, who a client is, rate limits.
//! - [`cache`]: the two-layer response store (memory in front of Redis), RFC 9111 policy, keys.
//! - [`compress`]: answers compressed as they stream (zstd, Brotli, gzip), `[compression]`.
//! - [`upstream`]: each worker's pool of upstream connections (HTTP/1.1 and h2c, plain or TLS).
//! - [`tls`]: rustls at both ends: the TLS listener's certificates (reloaded live), the `https://`
//!   upstream's verification and session cache, the client and upstream streams (TCP or TLS).
//! - [`settings`]: the config file's shape and `ConfigError`, for the components that parse their
//!   own keys.
//! - [`wire`]: the HTTP/1 and gRPC rulebook, route patterns.
//! - [`redact`] and [`system`]: leaves: secrets out of text, the process's own figures.

#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod admit;
pub mod cache;
pub mod compress;
pub mod config;
pub(crate) mod lanes;
pub mod observe;
pub(crate) mod pipeline;
pub mod redact;
pub mod runtime;
pub mod settings;
pub(crate) mod shared;
pub(crate) mod system;
pub mod tls;
pub(crate) mod upstream;
pub mod watch;
pub(crate) mod wire;
