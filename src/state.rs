//! State shared by the request path: [`Shared`] (one per process, behind an
//! `Arc`, read by every worker) and [`Worker`] (one per worker thread, behind
//! an `Rc`, never touched by another thread).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use crate::config::Config;
use crate::routes::{RouteCache, RouteTable};
use crate::upstream::UpstreamPool;

/// Process-wide state.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub routes: RouteTable,
    pub started: Instant,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let routes = RouteTable::new(config.routes.clone(), config.max_routes);
        Arc::new(Shared {
            config,
            routes,
            started: Instant::now(),
        })
    }
}

/// One worker thread's state.
#[derive(Debug)]
pub struct Worker {
    pub shared: Arc<Shared>,
    pub upstream: Rc<UpstreamPool>,
    pub route_cache: RefCell<RouteCache>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>) -> Rc<Worker> {
        let upstream = UpstreamPool::new(shared.config.upstream.clone());
        Rc::new(Worker {
            shared,
            upstream,
            route_cache: RefCell::default(),
        })
    }
}

/// One client connection's facts, fixed when it was accepted.
#[derive(Debug)]
pub struct Client {
    pub worker: Rc<Worker>,
    /// The peer's IP, rendered once for `X-Forwarded-For`.
    pub ip: HeaderValue,
    /// Accepted on the admin listener: only perfproxy's own endpoints answer.
    pub admin_only: bool,
}
