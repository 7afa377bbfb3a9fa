//! Delivery of alert transitions to `alerts.webhook_url`: a bounded queue
//! (256 events) drained by one task that POSTs each as JSON, with a 2 s
//! timeout and up to 4 attempts (backoff 0.25, 0.5, 1 s). A full queue drops
//! the event with a log line: a dead webhook never slows traffic or grows
//! memory.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

use super::Alert;

const CAPACITY: usize = 256;
const ATTEMPTS: u32 = 4;

/// The sending side of the queue.
#[derive(Debug)]
pub struct Queue {
    tx: mpsc::Sender<Bytes>,
}

impl Queue {
    /// Starts the delivery task (needs a Tokio runtime); `tls` verifies an
    /// `https://` webhook.
    pub fn start(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Queue {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let uri: Uri = url.parse().expect("alerts.webhook_url was validated as an http:// URL");
        tokio::spawn(deliver(uri, tls, rx));
        Queue { tx }
    }

    /// Queues one transition; never waits.
    pub fn push(&self, status: &'static str, alert: &Alert) {
        let body = serde_json::json!({
            "status": status,
            "rule": alert.rule,
            "subject": alert.subject.as_deref().unwrap_or(""),
            "severity": alert.severity,
            "value": alert.value,
            "threshold": alert.threshold,
            "since": alert.since,
            "message": alert.message,
        });
        if self.tx.try_send(Bytes::from(body.to_string())).is_err() {
            warn!(rule = %alert.rule, status = %status, "alert webhook queue full: event dropped");
        }
    }
}

async fn deliver(uri: Uri, tls: Option<Arc<rustls::ClientConfig>>, mut rx: mpsc::Receiver<Bytes>) {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = tls.map_or_else(crate::tls::upstream::no_roots, |c| (*c).clone());
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1();
    let client: Client<_, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector.wrap_connector(http));
    while let Some(body) = rx.recv().await {
        for attempt in 0..ATTEMPTS {
            let req = Request::post(uri.clone())
                .header("content-type", "application/json")
                .header("user-agent", "perfproxy-alerts")
                .body(Full::new(body.clone()))
                .expect("a validated URI and static headers form a request");
            match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => break,
                Ok(Ok(resp)) => warn!(status = resp.status().as_u16(), attempt, "alert webhook refused the event"),
                Ok(Err(e)) => warn!(error = %e, attempt, "alert webhook unreachable"),
                Err(_) => warn!(attempt, "alert webhook timed out"),
            }
            if attempt + 1 < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
        }
    }
}
