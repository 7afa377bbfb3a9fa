//! Which lane a parsed request takes (see the module above): perfproxy's
//! endpoints, the rate limits' refusal, a fresh hit, the express exchange
//! (cache off, bypasses, plain misses), or the general path; `None` hands
//! the connection to hyper.

use std::time::Instant;

use http::Method;

use super::{cached, Bypass, Cached, Conn, Lane};
use crate::cache::{key, Counters};
use crate::pipeline::answer::Fwd;
use crate::wire::http1;

impl Conn {
    /// `None`: hyper takes the connection.
    pub(super) fn lane(&mut self) -> Option<Lane> {
        let worker = &self.client.worker;
        let shared = &worker.shared;
        let (head, buf) = (&self.head, &self.buf[..]);
        let path = head.path();
        if shared.admin_paths.owns(path, self.client.admin_only) {
            if path == shared.admin_paths.purge || head.content_length > 0 {
                return None;
            }
            return head.to_request(buf).map(|r| Lane::Own(Box::new(r)));
        }
        // Compression is the general path's: here, only the cache's hits on
        // stored codings are answered (read once per request). A request with
        // a body is hyper's then: handed over before the rate limits count it.
        let compressing = shared.compression.enabled();
        if head.content_length > 0 && compressing {
            return None;
        }
        if let Some(limits) = worker.limits() {
            let fields = head.fields(buf);
            let asker = self.client.asker(&fields);
            let now = Instant::now();
            self.checked_at = Some(now);
            let instances = || shared.cluster.live_instances();
            if let Err(refusal) = limits.check(&head.method, path, &asker, now, instances) {
                return Some(Lane::Refused(Box::new(refusal.into())));
            }
        }
        let rules = shared.cache.rules();
        if !rules.enabled {
            return if compressing { self.general() } else { Some(Lane::Express(Cached::Off)) };
        }
        let (mut pass_key, mut policy) = (None, None);
        if http1::consults_cache(&head.method, head.range) {
            if head.forwarding_other && self.client.peer.trusted {
                // Keyed by the general path (`key::forwarding_fields`).
                return self.general();
            }
            let forwarded = head.forwarded(buf, self.client.peer.trusted, self.client.tls);
            let key = key::primary(head.host(), path, head.query(), &rules.ignore_query, forwarded);
            if !worker.cache_passes.borrow().active(&key) {
                let codings = || {
                    let compress = head.method != Method::HEAD;
                    shared.compression.table().rank(head.field_values(buf, b"accept-encoding"), compress)
                };
                let found = cached::lookup(worker, &rules, (key, path), &head.method, head.lookup_fields, codings);
                return match found {
                    cached::Lookup::Hit(entry) => Some(Lane::Hit(entry)),
                    cached::Lookup::Miss(miss) if !compressing => Some(Lane::Express(Cached::Miss(miss))),
                    cached::Lookup::Miss(_) | cached::Lookup::General => self.general(),
                };
            }
            pass_key = Some(key);
            policy = Some(rules.policy(path));
        }
        if compressing {
            return self.general();
        }
        Counters::add(&worker.cache_counters.bypasses, 1);
        let method = !http1::consults_cache(&head.method, false);
        let fwd = if method { Fwd::Method } else { Fwd::Bypass };
        let cache_status = fwd.text(false).as_bytes();
        Some(Lane::Express(Cached::Bypass(Bypass { cache_status, pass_key, policy })))
    }

    /// The general path's lane for a request the rate limits have counted
    /// (the cache's other lookups; everything while compression is on).
    /// Those have no body by now (a GET or HEAD with one is hyper's from
    /// its head; any other with compression on, from `lane`'s start); one
    /// that had would be hyper's too (`None`), never its body dropped.
    fn general(&self) -> Option<Lane> {
        if self.head.content_length > 0 {
            return None;
        }
        self.head.to_request(&self.buf).map(|mut r| {
            // Counted by the rate limits: not again on the general path.
            r.extensions_mut().insert(crate::admit::limits::Counted);
            Lane::Own(Box::new(r))
        })
    }
}
