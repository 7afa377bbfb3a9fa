//! What the request path and the endpoints share: [`state`] (the process's
//! `Shared`, each thread's `Worker`, each connection's `Client`), [`body`]
//! (the body that goes to the client), [`endpoints`] (what perfproxy's own
//! endpoints keep between requests), [`error`] (`ProxyError` and the one
//! place it becomes an HTTP answer) and [`held`] (how much each structure a
//! client can grow holds). It composes the layers below and is
//! imported only by the layers above.

pub(crate) mod body;
pub(crate) mod endpoints;
pub(crate) mod error;
pub(crate) mod held;
pub(crate) mod state;
