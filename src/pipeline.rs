//! The one request path both lanes call, phase by phase: [`proxy`] runs a
//! request on `http` types top to bottom (own endpoints → route → checks →
//! cache or upstream → answer); [`phases`] holds the phases the express lane
//! calls directly (start of recording, refusals, upstream failures);
//! [`serve`], [`answer`], [`store`] and [`purge`] are the cache's phase
//! (lookup, hit, collapse, miss; the hit's head; what a miss stores; `POST`
//! purges); [`forward`] is the
//! upstream exchange (time-boxed, head checked and rewritten).

pub(crate) mod answer;
pub(crate) mod forward;
pub(crate) mod phases;
pub(crate) mod proxy;
pub(crate) mod purge;
pub(crate) mod serve;
pub(crate) mod store;
