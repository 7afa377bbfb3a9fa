//! Route labels: every request is counted under `METHOD /template`.
//! Configured patterns are tried in order (first match wins, like Envoy's
//! route list); otherwise the path is normalised, with identifier-like
//! segments (numbers, UUIDs, long hex, opaque tokens) becoming `:id` and,
//! with route discovery on, every other value `:param` until the traffic
//! has shown it is a name ([`Discovery`]). Labels
//! are interned in a [`RouteTable`] bounded by `max_routes`; past the bound,
//! new labels fold into `METHOD OTHER`. Each worker keeps a [`RouteCache`] in
//! front of the table, so a known label costs a hash lookup and no lock.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use http::Method;

use super::discovery::{is_identifier, Discovery};

/// Index of an interned route label; stable for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u32);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `:name`: exactly one non-empty segment.
    Param,
    /// `*`: the rest of the path after the slash (may be empty); last only.
    Rest,
}

/// A configured pattern such as `GET /api/users/:id` or `/api/documents/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    method: Option<Method>,
    segments: Vec<Segment>,
    template: Box<str>,
}

impl RoutePattern {
    /// Parses `[METHOD ]/path` where segments may be `:name` or a final `*`.
    pub fn parse(text: &str) -> Result<RoutePattern, String> {
        let text = text.trim();
        let (method, path) = match text.split_once(' ') {
            Some((m, p)) => {
                let method = Method::from_bytes(m.as_bytes())
                    .ok()
                    .filter(|_| m.bytes().all(|b| b.is_ascii_uppercase()))
                    .ok_or_else(|| format!("an upper-case HTTP method before the path, not {m:?}"))?;
                (Some(method), p.trim())
            }
            None => (None, text),
        };
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err("a pattern like \"GET /api/users/:id\" or \"/api/documents/*\"".into());
        }
        let raw: Vec<&str> = path[1..].split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            segments.push(match *seg {
                "*" if i + 1 == raw.len() => Segment::Rest,
                "*" => return Err("`*` only as the last segment".into()),
                s if s.starts_with(':') && s.len() > 1 => Segment::Param,
                ":" => return Err("a name after `:`".into()),
                s => Segment::Literal(s.into()),
            });
        }
        Ok(RoutePattern { method, segments, template: path.into() })
    }

    /// Whether `method` and `path` (no query) match this pattern.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.matches_path(path)
    }

    /// Whether `path` matches, whatever the method.
    pub fn matches_path(&self, path: &str) -> bool {
        // Its segments as `split('/')` gives them, by bytes (this runs per
        // request, per pattern: no string searcher).
        let mut rest = Some(path.strip_prefix('/').unwrap_or(path).as_bytes());
        let mut next = || {
            let r = rest?;
            match r.iter().position(|&b| b == b'/') {
                Some(i) => {
                    rest = Some(&r[i + 1..]);
                    Some(&r[..i])
                }
                None => {
                    rest = None;
                    Some(r)
                }
            }
        };
        for seg in &self.segments {
            match seg {
                // `/a/*` needs the slash: it matches `/a/` and `/a/b/c`, not `/a`.
                Segment::Rest => return rest.is_some(),
                Segment::Param => match next() {
                    Some(p) if !p.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(l) => match next() {
                    Some(p) if p == l.as_bytes() => {}
                    _ => return false,
                },
            }
        }
        next().is_none()
    }

    /// The path template, e.g. `/api/users/:id`.
    pub fn template(&self) -> &str {
        &self.template
    }
}

/// `/package.Service/Method`: two segments, the first with a package (so a
/// client cannot mint labels from ids by sending a gRPC content type).
fn is_grpc_method(path: &str) -> bool {
    let mut segments = path.strip_prefix('/').unwrap_or("").split('/');
    let (Some(service), Some(method), None) = (segments.next(), segments.next(), segments.next()) else {
        return false;
    };
    service.contains('.') && !service.starts_with('.') && !method.is_empty()
}

/// Writes the normalised template of `path` into `out`.
pub fn normalise_into(path: &str, out: &mut String) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    for seg in rest.split('/') {
        out.push('/');
        out.push_str(if is_identifier(seg) { ":id" } else { seg });
    }
}

fn method_label(m: &Method) -> &str {
    match *m {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS
        | Method::TRACE
        | Method::CONNECT => m.as_str(),
        _ => "OTHER",
    }
}

/// Paths a worker keeps with their route ([`RouteCache`]'s `verbatim`), at
/// most, and the longest path kept: about 1 MB a worker at worst.
const VERBATIM_KEPT: usize = 4096;
const VERBATIM_LONGEST: usize = 256;

#[derive(Debug, Default)]
struct Labels {
    ids: HashMap<Arc<str>, RouteId>,
    names: Vec<Arc<str>>,
    /// Labels counted against `max_routes` (the `OTHER` ones are not).
    bounded: usize,
}

/// The process-wide, bounded table of route labels.
#[derive(Debug)]
pub struct RouteTable {
    patterns: ArcSwap<Vec<RoutePattern>>,
    /// Bumped when the patterns change, so workers refresh their copy.
    generation: AtomicU64,
    max_routes: usize,
    labels: Mutex<Labels>,
    /// `None`: the plain normalisation.
    discovery: Option<Discovery>,
}

/// A worker's lock-free view of the labels it has already seen.
#[derive(Debug, Default)]
pub struct RouteCache {
    scratch: String,
    /// foldhash (seeded per process): looked up on every request.
    known: foldhash::HashMap<Box<str>, RouteId>,
    /// `METHOD path` as sent → its route, for the paths whose label is
    /// themselves (no pattern, nothing normalised): most requests repeat
    /// one, and skip the patterns and the normalising. A path holding an
    /// identifier is never kept here (each id would be an entry).
    verbatim: foldhash::HashMap<Box<str>, RouteId>,
    generation: u64,
    patterns: Arc<Vec<RoutePattern>>,
}

impl RouteTable {
    /// `discovery`: `(literal_after, max_literals)` to learn labels from
    /// the traffic (positions tracked: four per possible label).
    pub fn new(patterns: Vec<RoutePattern>, max_routes: usize, discovery: Option<(u32, usize)>) -> RouteTable {
        RouteTable {
            patterns: ArcSwap::from_pointee(patterns),
            generation: AtomicU64::new(1),
            max_routes,
            labels: Mutex::default(),
            discovery: discovery.map(|(after, most)| Discovery::new(after, most, max_routes.saturating_mul(4).max(64))),
        }
    }

    /// The patterns labels are tried against: `configured` (`[[routes]]`),
    /// then, when routes are discovered, the patterns rules `declared`
    /// (cache rules, rate limits), which count what they match under their
    /// own pattern instead of learning it value by value.
    pub fn patterns_for(&self, configured: &[RoutePattern], declared: &[RoutePattern]) -> Vec<RoutePattern> {
        let mut all = configured.to_vec();
        if self.discovery.is_some() {
            for p in declared {
                if !all.contains(p) {
                    all.push(p.clone());
                }
            }
        }
        all
    }

    /// Replaces the patterns (a reload); labels already interned stay.
    pub fn set_patterns(&self, patterns: Vec<RoutePattern>) {
        self.patterns.store(Arc::new(patterns));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The label of a request, interned; allocation-free once seen.
    pub fn resolve(&self, method: &Method, path: &str, cache: &mut RouteCache) -> RouteId {
        self.resolve_as(method, path, false, cache)
    }

    /// As [`RouteTable::resolve`]; `grpc`: the request is a gRPC call, whose
    /// `/package.Service/Method` path is its label as it is (no segment of
    /// it is an identifier, however many digits a versioned package has).
    pub fn resolve_as(&self, method: &Method, path: &str, grpc: bool, cache: &mut RouteCache) -> RouteId {
        let generation = self.generation.load(Ordering::Acquire);
        if cache.generation != generation {
            cache.patterns = self.patterns.load_full();
            cache.known.clear();
            cache.verbatim.clear();
            cache.generation = generation;
        }
        let buf = &mut cache.scratch;
        buf.clear();
        buf.push_str(method_label(method));
        buf.push(' ');
        let prefix = buf.len();
        if !grpc {
            buf.push_str(path);
            if let Some(id) = cache.verbatim.get(buf.as_str()) {
                return *id;
            }
            buf.truncate(prefix);
        }
        let pattern = cache.patterns.iter().find(|p| p.matches(method, path));
        match pattern {
            Some(p) => buf.push_str(p.template()),
            // A gRPC method's names are learned too (a client picks the
            // content type), but never taken for identifiers.
            None if grpc && is_grpc_method(path) => match &self.discovery {
                Some(d) => d.label_into(path, buf, false),
                None => buf.push_str(path),
            },
            None => match &self.discovery {
                Some(d) => d.label_into(path, buf, true),
                None => normalise_into(path, buf),
            },
        }
        let by_pattern = pattern.is_some();
        let id = match cache.known.get(buf.as_str()) {
            Some(id) => *id,
            None => {
                let id = self.intern(buf, method);
                if cache.known.len() >= self.max_routes.saturating_mul(2).max(64) {
                    cache.known.clear();
                }
                cache.known.insert(buf.as_str().into(), id);
                id
            }
        };
        // Its own label, reached by normalising (not a pattern, not as gRPC):
        // the same path resolves the same way until the patterns change.
        // Not a long path (the map is bounded in bytes too), nor a method
        // labelled `OTHER` (patterns tell those methods apart; the key does not).
        let own = !grpc
            && path.len() <= VERBATIM_LONGEST
            && method_label(method) != "OTHER"
            && !by_pattern
            && &buf[prefix..] == path;
        if own {
            if cache.verbatim.len() >= VERBATIM_KEPT {
                cache.verbatim.clear();
            }
            cache.verbatim.insert(buf.as_str().into(), id);
        }
        id
    }

    fn intern(&self, label: &str, method: &Method) -> RouteId {
        let mut labels = self.labels.lock().expect("route label lock is never poisoned: no panics under it");
        if let Some(id) = labels.ids.get(label) {
            return *id;
        }
        let (name, bounded): (Arc<str>, bool) = if labels.bounded < self.max_routes {
            (label.into(), true)
        } else {
            let mut other = String::with_capacity(12);
            let _ = write!(other, "{} OTHER", method_label(method));
            if let Some(id) = labels.ids.get(other.as_str()) {
                return *id;
            }
            (other.into(), false)
        };
        let id = RouteId(labels.names.len() as u32);
        labels.names.push(name.clone());
        labels.ids.insert(name, id);
        labels.bounded += usize::from(bounded);
        id
    }

    /// The label text of `id`.
    pub fn name(&self, id: RouteId) -> Arc<str> {
        let labels = self.labels.lock().expect("route label lock is never poisoned: no panics under it");
        labels.names[id.0 as usize].clone()
    }

    /// The id of a label already interned.
    pub fn id_of(&self, label: &str) -> Option<RouteId> {
        self.labels.lock().expect("route label lock is never poisoned: no panics under it").ids.get(label).copied()
    }

    /// Every label interned so far, indexed by `RouteId`.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.labels.lock().expect("route label lock is never poisoned: no panics under it").names.clone()
    }

    /// Route discovery's positions tracked and values learned (0, 0 when off).
    pub fn discovery_held(&self) -> (usize, usize) {
        self.discovery.as_ref().map_or((0, 0), Discovery::held)
    }

    /// Labels interned so far (at most `max_routes` plus one `OTHER` per method).
    pub fn label_count(&self) -> usize {
        self.labels.lock().expect("route label lock is never poisoned: no panics under it").names.len()
    }
}

impl RouteCache {
    /// Paths and labels this worker remembers (each map is bounded).
    pub fn held(&self) -> usize {
        self.known.len() + self.verbatim.len()
    }
}

#[cfg(test)]
mod tests;
