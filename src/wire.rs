//! The bottom layer: the rules of the wire, imported by everything and
//! importing nothing of the crate. [`http1`] is the HTTP/1 rulebook both lanes
//! apply (field roles, lists, lengths, status validity, framing, forwarding,
//! cache eligibility), [`headers`] the same rules on `HeaderMap`s, [`grpc`]
//! gRPC's framing and status codes, [`encoding`] content codings and
//! `Accept-Encoding`, [`routes`] route patterns, path
//! normalisation and the bounded label table, [`discovery`] the labels
//! learned from the traffic, [`glob`] `*` wildcards.

pub(crate) mod discovery;
pub(crate) mod encoding;
pub(crate) mod glob;
pub(crate) mod grpc;
pub(crate) mod headers;
pub(crate) mod http1;
pub(crate) mod routes;
