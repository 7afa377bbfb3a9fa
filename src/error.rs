//! The proxy's one error type and the one place it becomes an HTTP answer.
//! Clients get a status and a short JSON body (`{"error": ..., "detail": ...}`)
//! that never carries internal detail; the cause goes to the log.

use http::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{Response, StatusCode};
use std::time::Duration;

use crate::body::ProxyBody;
use crate::upstream::UpstreamError;

/// Why a request could not be proxied, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something we will not forward (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client's body broke off or was malformed while streaming (400).
    #[error("client body: {0}")]
    ClientBody(hyper::Error),
    /// The upstream refused, reset or spoke nonsense (502).
    #[error("bad gateway: {0}")]
    BadGateway(#[from] UpstreamError),
    /// The upstream did not answer within `upstream_timeout` (504).
    #[error("upstream did not answer within {0:?}")]
    GatewayTimeout(Duration),
}

impl ProxyError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ProxyError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The client-facing answer: status, JSON body, no internals.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let (code, detail): (&str, String) = match &self {
            ProxyError::BadRequest(why) => ("bad_request", (*why).to_string()),
            ProxyError::ClientBody(_) => ("bad_request", "the request body was malformed or cut off".into()),
            ProxyError::BadGateway(UpstreamError::Connect(_)) => {
                ("bad_gateway", "the upstream refused the connection".into())
            }
            ProxyError::BadGateway(_) => ("bad_gateway", "the upstream closed or reset the connection".into()),
            ProxyError::GatewayTimeout(t) => {
                ("gateway_timeout", format!("the upstream did not answer within {} ms", t.as_millis()))
            }
        };
        let body = serde_json::json!({ "error": code, "detail": detail }).to_string();
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::BAD_REQUEST {
            // The connection's framing can no longer be trusted.
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
