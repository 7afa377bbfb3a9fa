//! `*` wildcards: `*` matches any run of characters (`/` and spaces too).
//! One matcher for cache invalidation patterns and purges
//! (`cache::key::Glob`) and service level objectives' routes.

/// Whether `text` is matched by `pattern` (without `*`: equal).
pub fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}
