//! The upstream probe over HTTP/2 (`upstream_protocol = "h2c"`), for
//! backends that speak nothing else, gRPC servers among them. With the
//! default `health.upstream_path` ("/") it is the standard gRPC health check
//! (`grpc.health.v1.Health/Check`, as Kubernetes' gRPC probes send): up
//! unless the server reports `NOT_SERVING`, fails, or answers 5xx; a server
//! without the health service answers `UNIMPLEMENTED`, which shows it is
//! there. Any other path is a `GET`, up below 500, as over HTTP/1.1.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;

use super::Connector;

/// The gRPC health check's method.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// An HTTP/2-only client for the upstream.
pub type H2Client = Client<Connector, Full<Bytes>>;

pub fn client(connector: Connector) -> H2Client {
    Client::builder(hyper_util::rt::TokioExecutor::new()).pool_max_idle_per_host(1).http2_only(true).build(connector)
}

pub async fn probe(client: &H2Client, base: &Uri) -> Result<(), String> {
    let where_ = base.authority().map_or_else(String::new, |a| a.to_string());
    let grpc = base.path() == "/";
    let req = if grpc {
        let uri = format!("{}://{where_}{HEALTH_CHECK}", base.scheme_str().unwrap_or("http"));
        // One empty HealthCheckRequest (service ""): flag 0, length 0.
        Request::post(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "perfproxy-health")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
    } else {
        Request::get(base.clone()).header("user-agent", "perfproxy-health").body(Full::default())
    }
    .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("{} ({where_})", crate::redact::chain(&e)))?;
    let status = resp.status().as_u16();
    if status >= 500 {
        return Err(format!("answered {status}"));
    }
    if !grpc {
        return Ok(());
    }
    let head_status = crate::wire::grpc::status_in(resp.headers());
    let body = resp.into_body().collect().await.map_err(|e| format!("{} ({where_})", crate::redact::chain(&e)))?;
    let code = head_status.or_else(|| body.trailers().and_then(crate::wire::grpc::status_in));
    let message = body.to_bytes();
    use crate::wire::grpc::Code;
    match code {
        // HealthCheckResponse { status = 1 }: field 1, varint; 2 is NOT_SERVING.
        Some(Code::Ok) if message.get(5..7) == Some(&[0x08, 0x02]) => {
            Err("the gRPC health check says NOT_SERVING".into())
        }
        Some(Code::Ok | Code::Unimplemented) => Ok(()),
        Some(other) => Err(format!("the gRPC health check answered {}", other.name())),
        None => Err("the gRPC health check answered no grpc-status".into()),
    }
}
