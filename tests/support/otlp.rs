//! A real OTLP/HTTP trace receiver: it accepts `POST /v1/traces`, decodes
//! the protobuf with the `opentelemetry-proto` types, and keeps the spans
//! with their resource's `service.name`. It can also be made to hang (a
//! collector that accepts and never answers).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

/// A span as received, with its service.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute's value as text (strings as they are, numbers formatted).
pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub addr: Option<SocketAddr>,
    spans: Arc<Mutex<Vec<Received>>>,
    pub exports: Arc<AtomicUsize>,
    hang: Arc<AtomicBool>,
}

impl Receiver {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("started"))
    }
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
    /// From now on, accept exports and never answer them.
    pub fn hang(&self) {
        self.hang.store(true, Ordering::SeqCst);
    }
}

pub async fn spawn_receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rx = Receiver { addr: Some(listener.local_addr().unwrap()), ..Receiver::default() };
    let r = rx.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let r = r.clone();
                    async move {
                        if r.hang.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        let path_ok = req.uri().path() == "/v1/traces";
                        let ct = req.headers().get("content-type").map(|v| v.as_bytes().to_vec());
                        let body = req.into_body().collect().await?.to_bytes();
                        let mut status = StatusCode::OK;
                        match ExportTraceServiceRequest::decode(body) {
                            Ok(msg) if path_ok && ct.as_deref() == Some(b"application/x-protobuf") => {
                                let mut spans = r.spans.lock().unwrap();
                                for rs in msg.resource_spans {
                                    let attrs = rs.resource.map(|res| res.attributes).unwrap_or_default();
                                    let service = attr(&attrs, "service.name").unwrap_or_default();
                                    for ss in rs.scope_spans {
                                        for span in ss.spans {
                                            spans.push(Received { service: service.clone(), span });
                                        }
                                    }
                                }
                                r.exports.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => status = StatusCode::BAD_REQUEST,
                        }
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = status;
                        resp.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    rx
}
