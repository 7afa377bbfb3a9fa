//! Which of a key's stored variants answers a request: those whose vary
//! values match it, then, among variants in codings perfproxy chose
//! (`[compression]`), the one the client's `Accept-Encoding` ranks best.
//! Both lanes call [`choose`] (the express lane on a key that varies on
//! nothing else, the general path through [`pick`]).

use std::sync::Arc;

use http::HeaderMap;

use super::entry::Entry;
use super::key;
use crate::wire::encoding::Ranked;

/// The variant for `request`: of those matching its vary values, newest
/// first, one stored as it came, else the coding the client ranks best
/// ([`choose`]).
pub(super) fn pick(variants: &[Arc<Entry>], request: &HeaderMap, codings: &Ranked) -> Option<Arc<Entry>> {
    let matching = variants.iter().filter(|e| {
        let language = e.headers.get(http::header::CONTENT_LANGUAGE).filter(|l| !l.as_bytes().contains(&b','));
        key::vary_matches(&e.vary, request, language)
    });
    choose(matching, codings)
}

/// Of `variants` (newest first, their other vary values matching): the
/// first stored as it came (no coding negotiated) unless a newer one in a
/// coding the client takes precedes it, else the one in the coding
/// `codings` ranks best. A stored coding the client takes is used
/// even when it would prefer another that is not stored (no miss when one
/// fits); identity is taken only when it ranks first, so a client that
/// takes a compressed coding gets one stored (a miss stores it).
pub fn choose<'a>(variants: impl Iterator<Item = &'a Arc<Entry>>, codings: &Ranked) -> Option<Arc<Entry>> {
    let mut best: Option<(usize, &Arc<Entry>)> = None;
    for e in variants {
        // Stored as it came: it answers, unless a newer coding the client takes came first.
        let Some(coding) = e.coding else { return Some(best.map_or(e, |(_, b)| b).clone()) };
        match codings.position(coding) {
            Some(0) => return Some(e.clone()),
            Some(_) if coding == crate::wire::encoding::Coding::Identity => {}
            Some(at) if best.is_none_or(|(b, _)| at < b) => best = Some((at, e)),
            _ => {}
        }
    }
    best.map(|(_, e)| e.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cache::entry::test_entry as entry;

    #[test]
    fn a_client_gets_the_best_stored_coding_it_takes_and_identity_only_first() {
        use crate::wire::encoding::{Accepted, Coding};
        let coded = |c: Option<Coding>, body: usize| Arc::new(Entry { coding: c, ..(*entry(body)).clone() });
        let rank = |ae: &str| Accepted::parse([ae.as_bytes()]).rank(&Coding::COMPRESSED, true);
        let slot = [coded(Some(Coding::Gzip), 1), coded(Some(Coding::Br), 2), coded(Some(Coding::Identity), 3)];
        let got = |ae: &str| choose(slot.iter(), &rank(ae)).map(|e| e.body.len());
        assert_eq!(got("gzip, br"), Some(2), "br ranks first");
        assert_eq!(got("zstd, gzip"), Some(1), "zstd not stored: gzip fits");
        assert_eq!(got("identity"), Some(3));
        assert_eq!(got("zstd"), None, "a miss stores zstd rather than answering identity");
        // An entry stored as it came (before compression was on) answers,
        // unless a newer coding the client takes comes first.
        let mixed = [coded(Some(Coding::Gzip), 1), coded(None, 4)];
        assert_eq!(choose(mixed.iter(), &rank("br, gzip")).map(|e| e.body.len()), Some(1));
        assert_eq!(choose(mixed.iter(), &rank("identity")).map(|e| e.body.len()), Some(4));
    }
}
