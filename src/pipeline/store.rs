//! A miss's answer on its way to the cache, for both lanes: counted and its
//! key remembered ([`count`]: a storable key's next miss is collapsed, an
//! uncacheable one is not looked up for a while), and the entry it becomes
//! ([`pending_entry`]; its body is copied as it is relayed, `Fill`).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::StatusCode;

use crate::cache::entry::Entry;
use crate::cache::key::VaryValues;
use crate::cache::policy::{self, Lifetime};
use crate::cache::Counters;
use crate::pipeline::answer::per_request;
use crate::shared::state::Worker;
use crate::wire::encoding::Coding;

/// Counts a miss's answer under `key`: storable, a miss (its key is now
/// worth collapsing); not, `uncacheable` (it says nothing about the hit
/// rate), and with `pass_ttl` the key is not looked up for that long
/// (hit-for-miss).
pub fn count(worker: &Worker, key: &str, storable: bool, status: u16, pass_ttl: Option<Duration>) {
    let counters = &worker.cache_counters;
    if storable {
        Counters::add(&counters.misses, 1);
        worker.cache_passes.borrow_mut().mark_storable(key);
    } else {
        Counters::add(&counters.uncacheable, 1);
        if let Some(ttl) = pass_ttl {
            worker.cache_passes.borrow_mut().mark_uncacheable(key, status, ttl);
        }
    }
}

/// The entry a storable answer becomes, its body still to come: the
/// answer's fields as relayed, less the per-request ones and perfproxy's own
/// `Surrogate-Control`, as owned copies sized to fit (a value parsed by hyper
/// is a slice of its connection's read buffer, which a clone would keep
/// alive as long as the entry); aged on arrival from the upstream's `Age`
/// and `Date`; filed under the request's values of the fields its `Vary`
/// names (`vary`), in `coding` when perfproxy negotiated one.
pub fn pending_entry(
    status: StatusCode,
    fields: &HeaderMap,
    (vary, coding): (VaryValues, Option<Coding>),
    lifetime: Lifetime,
    (request_time, response_time): (SystemTime, SystemTime),
) -> Entry {
    let mut headers = HeaderMap::with_capacity(fields.len());
    // The body is stored whole, whatever its framing: the entry's length is its own.
    let kept = |n: &HeaderName| !per_request(n) && *n != policy::SURROGATE_CONTROL && *n != header::TRANSFER_ENCODING;
    for (name, value) in fields.iter().filter(|(n, _)| kept(n)) {
        headers.append(name.clone(), crate::cache::entry::owned(value));
    }
    Entry {
        status,
        vary,
        coding,
        initial_age: policy::initial_age(fields, request_time, response_time).as_millis() as u64,
        headers,
        body: bytes::Bytes::new(),
        response_time: policy::epoch_ms(response_time),
        lifetime,
        wire: Default::default(),
    }
}
