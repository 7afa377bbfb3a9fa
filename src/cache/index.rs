//! The memory layer's keys by path and by tag ([`PathIndex`]), kept in
//! step with inserts and evictions, so an invalidation finds what it drops
//! without looking at what it keeps: an exact path is one map lookup, a
//! pattern (`/api/users/*`) a range over the paths sharing its literal
//! prefix, a tag (`Surrogate-Key`) one lookup. A write's or a purge's cost
//! therefore depends on the entries it drops, never on how many the cache
//! holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use super::key::{path_of, Glob};

/// Keys held in memory, by path. Each operation holds the lock for one map
/// operation (never while calling into the memory layer, whose eviction
/// listener takes it too).
#[derive(Debug, Default)]
pub struct PathIndex {
    by_path: Mutex<BTreeMap<String, HashSet<String>>>,
    tags: Mutex<Tags>,
}

/// Keys by tag, and each tagged key's tags (to forget it everywhere).
#[derive(Debug, Default)]
struct Tags {
    keys: HashMap<String, HashSet<String>>,
    of_key: HashMap<String, Vec<String>>,
}

impl PathIndex {
    /// Records `key` with its tags (call before it is inserted, so an
    /// eviction that follows at once finds it).
    pub fn add(&self, key: &str, tags: &[String]) {
        if !tags.is_empty() {
            let mut t = self.tags.lock().expect("no code panics holding the tag index");
            for tag in tags {
                t.keys.entry(tag.clone()).or_default().insert(key.to_string());
            }
            t.of_key.insert(key.to_string(), tags.to_vec());
        }
        let mut map = self.by_path.lock().expect("no code panics holding the path index");
        let path = path_of(key);
        match map.get_mut(path) {
            Some(keys) => {
                if !keys.contains(key) {
                    keys.insert(key.to_string());
                }
            }
            None => {
                map.insert(path.to_string(), HashSet::from([key.to_string()]));
            }
        }
    }

    /// Forgets `key` (it left the memory layer).
    pub fn remove(&self, key: &str) {
        {
            let mut t = self.tags.lock().expect("no code panics holding the tag index");
            if let Some(tags) = t.of_key.remove(key) {
                for tag in tags {
                    if let Some(keys) = t.keys.get_mut(&tag) {
                        keys.remove(key);
                        if keys.is_empty() {
                            t.keys.remove(&tag);
                        }
                    }
                }
            }
        }
        let mut map = self.by_path.lock().expect("no code panics holding the path index");
        let path = path_of(key);
        if let Some(keys) = map.get_mut(path) {
            keys.remove(key);
            if keys.is_empty() {
                map.remove(path);
            }
        }
    }

    /// Takes out every key whose path `pattern` selects, and returns them.
    pub fn take_matching(&self, pattern: &Glob) -> Vec<String> {
        let mut map = self.by_path.lock().expect("no code panics holding the path index");
        let text = pattern.as_str();
        if !text.contains('*') {
            return map.remove(text).map(|keys| keys.into_iter().collect()).unwrap_or_default();
        }
        let prefix = pattern.literal_prefix();
        let paths: Vec<String> = map
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(path, _)| path.starts_with(prefix))
            .filter(|(path, _)| pattern.matches(path))
            .map(|(path, _)| path.clone())
            .collect();
        paths.iter().filter_map(|p| map.remove(p)).flatten().collect()
    }

    /// The keys carrying `tag` (they stay indexed until they leave memory).
    pub fn tagged(&self, tag: &str) -> Vec<String> {
        let t = self.tags.lock().expect("no code panics holding the tag index");
        t.keys.get(tag).map(|keys| keys.iter().cloned().collect()).unwrap_or_default()
    }

    /// Paths indexed (for tests and figures).
    pub fn paths(&self) -> usize {
        self.by_path.lock().expect("no code panics holding the path index").len()
    }

    pub fn clear(&self) {
        self.by_path.lock().expect("no code panics holding the path index").clear();
        let mut t = self.tags.lock().expect("no code panics holding the tag index");
        t.keys.clear();
        t.of_key.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_paths_and_patterns_take_only_what_they_select() {
        let index = PathIndex::default();
        for key in ["/a/1 h", "/a/1?x=1 h", "/a/2 h", "/b/1 h", "/a/1/c h"] {
            index.add(key, &[]);
        }
        index.add("/a/1 h", &["user-1".to_string()]);
        index.add("/b/1 h", &["user-1".to_string(), "b".to_string()]);
        let mut tagged = index.tagged("user-1");
        tagged.sort();
        assert_eq!(tagged, ["/a/1 h", "/b/1 h"]);
        let mut exact = index.take_matching(&Glob::new("/a/1"));
        exact.sort();
        assert_eq!(exact, ["/a/1 h", "/a/1?x=1 h"]);
        let mut under = index.take_matching(&Glob::new("/a/*"));
        under.sort();
        assert_eq!(under, ["/a/1/c h", "/a/2 h"]);
        assert_eq!(index.paths(), 1);
        index.remove("/b/1 h");
        assert_eq!(index.paths(), 0);
        index.remove("/a/1 h");
        assert!(index.tagged("user-1").is_empty() && index.tagged("b").is_empty(), "tags follow removals");
        assert!(index.take_matching(&Glob::new("*")).is_empty());
    }
}
