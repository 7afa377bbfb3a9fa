//! Rate limits (`[[rate_limits]]`). A rule matches requests as a route
//! pattern does and counts, per key (the client, a header's value, or
//! everyone), the requests it lets through, in pingora-limits' count-min
//! sketches over a sliding window of `burst / rps` seconds
//! ([`SlidingCounts`]: the previous window weighted by what is left of it,
//! plus the current one; Cloudflare's estimate). A request passes while that count
//! is under `burst`: `burst` at once after a quiet spell, `rps` on average.
//! A rule's sketch sits behind a mutex, so deciding and counting are one
//! step (nginx's `limit_req` locks its zone the same way). Over a limit the request is
//! answered `429` ([`Refusal::Over`], which the request path maps to HTTP)
//! and never forwarded. Limits are per instance; `shared = true` divides a
//! rule's `burst` (and so its rate) by the live instances of the cluster view.
//! [`Limits`] holds the compiled rules; SIGHUP swaps them ([`LiveLimits`]),
//! and each worker keeps its own handle until then ([`WorkerLimits`]).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admit::clients::sliding::SlidingCounts;
use crate::admit::clients::{Asker, Fields, Key, KeySpec};
use crate::settings::{ConfigError, RateLimitRule};
use crate::wire::routes::RoutePattern;
use arc_swap::ArcSwap;
use http::Method;

/// Why the rate limits refused a request.
#[derive(Debug)]
pub enum Refusal {
    /// Over a rule's limit (a `429`).
    Over(Box<Limited>),
    /// A rule's key header came more than once (a `400`: which one a backend
    /// reads is anyone's guess).
    RepeatedKey,
}

/// The sketch of one rule: rows and counters per row (see the error bounds
/// in docs/operations.md). Two rows, each wide: every row is a hash and a counter
/// per request; a collision only ever makes a limit stricter.
const HASHES: usize = 2;
const SLOTS: usize = 16384;

/// A validated `[[rate_limits]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub pattern: RoutePattern,
    /// The pattern as written (the policy's name in `RateLimit-Policy`).
    pub name: String,
    pub key: KeySpec,
    pub rps: f64,
    pub burst: u64,
    pub shared: bool,
}

impl Rule {
    /// Checks entry `i`; an error names its key.
    pub fn compile(i: usize, r: &RateLimitRule) -> Result<Rule, ConfigError> {
        let at = |k: &str| format!("rate_limits[{i}].{k}");
        let pattern = RoutePattern::parse(&r.pattern)
            .map_err(|why| ConfigError::new(at("pattern"), format!("{:?}", r.pattern), why))?;
        let key = KeySpec::parse(&at("key"), &r.key, true)?;
        if !(r.rps.is_finite() && (0.001..=1e6).contains(&r.rps)) {
            return Err(ConfigError::new(at("rps"), r.rps, "requests per second, from 0.001 to 1000000"));
        }
        let burst = r.burst.unwrap_or((r.rps.ceil() as u64).max(1));
        if !(1..=1_000_000_000).contains(&burst) {
            return Err(ConfigError::new(at("burst"), burst, "a number of requests from 1 to 1000000000"));
        }
        let window = burst as f64 / r.rps;
        if !(0.001..=86_400.0).contains(&window) {
            let expected = "a burst that rps refills in 1 ms to a day (burst / rps from 0.001 to 86400 s)";
            return Err(ConfigError::new(at("burst"), burst, expected));
        }
        // An sf-string in the `RateLimit` fields: printable ASCII, no quote or backslash.
        let shown = |c: &char| (c.is_ascii_graphic() || *c == ' ') && !matches!(c, '"' | '\\');
        let name = r.pattern.trim().chars().filter(shown).collect();
        Ok(Rule { pattern, name, key, rps: r.rps, burst, shared: r.shared })
    }

    /// How long a window lasts: `burst` requests at `rps` (1 ms at least).
    fn window(&self) -> Duration {
        Duration::from_secs_f64(self.burst as f64 / self.rps).max(Duration::from_millis(1))
    }
}

/// In a request's extensions: the rate limits have counted it already (the
/// express lane handing it to the general path), so they do not again.
#[derive(Debug, Clone, Copy)]
pub struct Counted;

/// Why a request was refused: what its `RateLimit` fields say.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// The rule's name (its pattern).
    pub policy: String,
    /// Requests allowed per `window_secs`.
    pub quota: u64,
    pub window_secs: u64,
    /// Seconds until a request would pass (1 at least).
    pub retry_after_secs: u64,
}

struct Limiter {
    rule: Rule,
    /// Shared with the rule's next version when a reload leaves it unchanged.
    counts: Arc<Mutex<SlidingCounts>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("rule", &self.rule).finish_non_exhaustive()
    }
}

/// The compiled rules and their counts.
#[derive(Debug, Default)]
pub struct Limits {
    limiters: Vec<Limiter>,
}

impl Limits {
    pub fn new(rules: &[Rule]) -> Limits {
        let now = Instant::now();
        let limiters = rules
            .iter()
            .map(|rule| {
                let window = rule.window();
                // Narrower for short windows: a window's reset writes every counter.
                let slots = (SLOTS as f64 * window.as_secs_f64()).clamp(256.0, SLOTS as f64) as usize;
                let counts = SlidingCounts::new(window, HASHES, slots, now);
                Limiter { rule: rule.clone(), counts: Arc::new(Mutex::new(counts)) }
            })
            .collect();
        Limits { limiters }
    }

    pub fn is_empty(&self) -> bool {
        self.limiters.is_empty()
    }

    /// Counts the request, which began `now`, with every rule it matches,
    /// or refuses it with the first rule it is over (then counted by none):
    /// [`Refusal::Over`], or [`Refusal::RepeatedKey`] when a rule's key header comes
    /// more than once (which one a backend reads is anyone's guess).
    /// `instances`: the live instances, asked only for shared rules.
    pub fn check<F: Fields>(
        &self,
        method: &Method,
        path: &str,
        asker: &Asker<F>,
        now: Instant,
        instances: impl Fn() -> usize,
    ) -> Result<(), Refusal> {
        // `/api/x`, `//api/x`, `/%61pi/x` and `/b/../api/x` are one path to a
        // backend: a rule the raw path misses is tried on the canonical one
        // (worked out once, and only then).
        let canonical_path = std::cell::OnceCell::new();
        let matches = |l: &&Limiter| {
            let p = &l.rule.pattern;
            p.matches(method, path) || {
                let c: &Option<String> = canonical_path.get_or_init(|| canonical(path));
                c.as_deref().is_some_and(|c| p.matches(method, c))
            }
        };
        for (i, l) in self.limiters.iter().enumerate().filter(|(_, l)| matches(l)) {
            let refusal = if asker.repeated(&l.rule.key) {
                Refusal::RepeatedKey
            } else {
                let Some(who) = asker.who(&l.rule.key) else { continue };
                let divide = if l.rule.shared { instances().max(1) } else { 1 };
                match l.take(who.key(), now, divide) {
                    Ok(()) => continue,
                    Err(limited) => Refusal::Over(Box::new(limited)),
                }
            };
            // The rules before it counted the request: not any more.
            for earlier in self.limiters[..i].iter().filter(matches) {
                if let Some(who) = asker.who(&earlier.rule.key).filter(|_| !asker.repeated(&earlier.rule.key)) {
                    earlier.lock().take_back(&who.key(), 1);
                }
            }
            return Err(refusal);
        }
        Ok(())
    }
}

/// `path` as a backend would route it: `%XX` of unreserved characters
/// decoded, runs of `/` merged, `.` and `..` segments removed (RFC 3986
/// §6.2.2); `None` when it is that already.
fn canonical(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut i = 0;
    let odd = loop {
        match b.get(i) {
            None => break false,
            Some(b'%') => break true,
            Some(b'/') if matches!(b.get(i + 1), Some(b'/' | b'.')) => break true,
            Some(_) => i += 1,
        }
    };
    if !odd {
        return None;
    }
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    decoded.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        decoded.push(b[i]);
        i += 1;
    }
    let text = String::from_utf8_lossy(&decoded);
    let mut out: Vec<&str> = Vec::new();
    for seg in text.split('/').filter(|s| !s.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..");
    let mut joined = String::with_capacity(text.len());
    for seg in &out {
        joined.push('/');
        joined.push_str(seg);
    }
    if trailing || joined.is_empty() {
        joined.push('/');
    }
    Some(joined)
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlidingCounts> {
        self.counts.lock().expect("rate-limit locks are never poisoned: no code under them panics")
    }

    /// Counts one request from `key` if its sliding count is under the
    /// quota (the rule's burst divided by `divide`), else says why not.
    fn take(&self, key: Key, now: Instant, divide: usize) -> Result<(), Limited> {
        let rule = &self.rule;
        let quota = if divide == 1 { rule.burst } else { (rule.burst / divide as u64).max(1) };
        let mut counts = self.lock();
        counts.advance(now);
        let current = (counts.add(&key, 1) - 1).max(0) as f64;
        let quota_f = quota as f64;
        // The previous window held too few requests in all to matter: not read.
        if counts.previous_total() + current < quota_f {
            return Ok(());
        }
        let previous = counts.previous(&key);
        // Under even without the previous window's fading: no clock arithmetic.
        if previous + current < quota_f {
            return Ok(());
        }
        let into = counts.fraction(now);
        if previous * (1.0 - into) + current < quota_f {
            return Ok(());
        }
        counts.take_back(&key, 1);
        let window = counts.window();
        drop(counts);
        let wait = wait_for((previous, current, into), window, quota_f).unwrap_or_default();
        let secs = window.as_secs_f64();
        let (quota_shown, window_secs) =
            if secs >= 1.0 { (quota, secs.ceil() as u64) } else { ((rule.rps / divide as f64).ceil() as u64, 1) };
        Err(Limited {
            policy: rule.name.clone(),
            quota: quota_shown,
            window_secs,
            retry_after_secs: (wait.as_secs_f64().ceil() as u64).max(1),
        })
    }
}

/// How long until the sliding count falls under `quota`, from the previous
/// window's count, the current one's and how far `into` it we are; `None`:
/// it is under.
fn wait_for((prev, curr, into): (f64, f64, f64), window: Duration, quota: f64) -> Option<Duration> {
    if prev * (1.0 - into) + curr < quota {
        return None;
    }
    let window = window.as_secs_f64();
    let fraction = if curr >= quota {
        // Past this window, the current count becomes the previous one and fades.
        (1.0 - into) + (1.0 - quota / curr)
    } else {
        (1.0 - (quota - curr) / prev) - into
    };
    Some(Duration::from_secs_f64((fraction * window).max(0.0)))
}

/// The rules in force, swapped on reload, and their generation.
#[derive(Debug)]
pub struct LiveLimits {
    generation: AtomicU64,
    limits: ArcSwap<Limits>,
}

impl LiveLimits {
    pub fn new(rules: &[Rule]) -> LiveLimits {
        LiveLimits { generation: AtomicU64::new(1), limits: ArcSwap::from_pointee(Limits::new(rules)) }
    }

    /// Applies reloaded rules; a rule that did not change keeps its counts.
    pub fn replace(&self, rules: &[Rule]) {
        let old = self.limits.load_full();
        let mut next = Limits::new(rules);
        let mut unclaimed: Vec<&Limiter> = old.limiters.iter().collect();
        for l in &mut next.limiters {
            // Each old rule's counts go to one new rule at most (two equal rules keep two counts).
            if let Some(i) = unclaimed.iter().position(|o| o.rule == l.rule) {
                l.counts = unclaimed.swap_remove(i).counts.clone();
            }
        }
        self.limits.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Whether any rule is in force.
    pub fn any(&self) -> bool {
        !self.limits.load().is_empty()
    }
}

/// A worker's copy of the rules in force: one atomic load per request to
/// see that no reload replaced them.
#[derive(Debug, Default)]
pub struct WorkerLimits {
    cached: RefCell<(u64, Option<Arc<Limits>>)>,
}

impl WorkerLimits {
    /// The rules in force, when there are any.
    #[inline]
    pub fn current(&self, live: &LiveLimits) -> Option<Arc<Limits>> {
        let generation = live.generation.load(Ordering::Acquire);
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            let limits = live.limits.load_full();
            *cached = (generation, (!limits.is_empty()).then_some(limits));
        }
        cached.1.clone()
    }
}

#[cfg(test)]
mod tests;
