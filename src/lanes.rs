//! How client connections are read and written: the codecs in front of the
//! one request path ([`crate::pipeline`]). [`express`] is the byte-level
//! HTTP/1.1 lane; [`http2`] sniffs the HTTP/2 preface and serves HTTP/2 (and
//! what the express lane hands off) with hyper through [`service`]; [`drain`] and [`linger`] close
//! a worker's connections well at shutdown; [`stream_clock`] bounds how long an HTTP/2
//! stream waits for its client. A lane decodes a request into the
//! pipeline's view and encodes its answer; every rule of a request lives
//! below it.

pub(crate) mod drain;
pub(crate) mod express;
pub(crate) mod http2;
pub(crate) mod linger;
pub(crate) mod service;
pub(crate) mod stream_clock;
