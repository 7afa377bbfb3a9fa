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
/// listener takes it too). Each key is recorded with the identity of the
/// slot it was inserted with ([`Slot`](super::Slot) pointer), so the
/// removal of a slot that was since replaced never unindexes its successor,
/// whatever cause the memory layer reports.
#[derive(Debug, Default)]
pub struct PathIndex {
    by_path: Mutex<ByPath>,
    tags: Mutex<Tags>,
}

/// Keys by path, and how many keys in all (for `/performance`'s
/// `memory.held`, without a walk).
#[derive(Debug, Default)]
struct ByPath {
    map: BTreeMap<String, HashMap<String, usize>>,
    keys: usize,
}

/// How much the index holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexSizes {
    pub paths: usize,
    pub keys: usize,
    pub tags: usize,
    pub tagged_keys: usize,
}

/// Keys by tag, and each tagged key's tags (to forget it everywhere).
#[derive(Debug, Default)]
struct Tags {
    keys: HashMap<String, HashSet<String>>,
    of_key: HashMap<String, Vec<String>>,
}

impl Tags {
    fn untag(&mut self, tag: &str, key: &str) {
        if let Some(keys) = self.keys.get_mut(tag) {
            keys.remove(key);
            if keys.is_empty() {
                self.keys.remove(tag);
            }
        }
    }
}

impl PathIndex {
    /// Records `key`, inserted with the slot `slot` (its pointer), with its
    /// tags (call before the insert, so an eviction that follows at once
    /// finds it).
    pub fn add(&self, key: &str, slot: usize, tags: &[String]) {
        {
            let mut t = self.tags.lock().expect("no code panics holding the tag index");
            let old = t.of_key.remove(key).unwrap_or_default();
            for tag in old.iter().filter(|o| !tags.contains(o)) {
                t.untag(tag, key);
            }
            for tag in tags {
                t.keys.entry(tag.clone()).or_default().insert(key.to_string());
            }
            if !tags.is_empty() {
                t.of_key.insert(key.to_string(), tags.to_vec());
            }
        }
        let mut guard = self.by_path.lock().expect("no code panics holding the path index");
        let by_path = &mut *guard;
        let path = path_of(key);
        match by_path.map.get_mut(path) {
            Some(keys) => match keys.get_mut(key) {
                Some(s) => *s = slot,
                None => {
                    keys.insert(key.to_string(), slot);
                    by_path.keys += 1;
                }
            },
            None => {
                by_path.map.insert(path.to_string(), HashMap::from([(key.to_string(), slot)]));
                by_path.keys += 1;
            }
        }
    }

    /// Forgets `key`, unless it is indexed with a newer slot than `slot`
    /// (that slot left the memory layer; a newer one under the same key
    /// stays). A key an invalidation already took out of the path map
    /// still loses its tags here.
    pub fn remove(&self, key: &str, slot: usize) {
        let mut guard = self.by_path.lock().expect("no code panics holding the path index");
        let by_path = &mut *guard;
        let path = path_of(key);
        if let Some(keys) = by_path.map.get_mut(path) {
            match keys.get(key) {
                Some(s) if *s != slot => return,
                Some(_) => {
                    keys.remove(key);
                    if keys.is_empty() {
                        by_path.map.remove(path);
                    }
                    by_path.keys -= 1;
                }
                None => {}
            }
        }
        drop(guard);
        let mut t = self.tags.lock().expect("no code panics holding the tag index");
        if let Some(tags) = t.of_key.remove(key) {
            for tag in tags {
                t.untag(&tag, key);
            }
        }
    }

    /// Takes out every key whose path `pattern` selects, and returns them.
    pub fn take_matching(&self, pattern: &Glob) -> Vec<String> {
        let mut guard = self.by_path.lock().expect("no code panics holding the path index");
        let by_path = &mut *guard;
        let taken: Vec<String> = if pattern.is_exact() {
            by_path.map.remove(pattern.as_str()).map(|keys| keys.into_keys().collect()).unwrap_or_default()
        } else {
            let prefix = pattern.literal_prefix();
            let paths: Vec<String> = by_path
                .map
                .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
                .take_while(|(path, _)| path.starts_with(prefix))
                .filter(|(path, _)| pattern.matches(path))
                .map(|(path, _)| path.clone())
                .collect();
            paths.iter().filter_map(|p| by_path.map.remove(p)).flat_map(HashMap::into_keys).collect()
        };
        by_path.keys -= taken.len();
        taken
    }

    /// The keys carrying `tag` (they stay indexed until they leave memory).
    pub fn tagged(&self, tag: &str) -> Vec<String> {
        let t = self.tags.lock().expect("no code panics holding the tag index");
        t.keys.get(tag).map(|keys| keys.iter().cloned().collect()).unwrap_or_default()
    }

    /// Paths indexed (for tests and figures).
    pub fn paths(&self) -> usize {
        self.by_path.lock().expect("no code panics holding the path index").map.len()
    }

    /// What the index holds now.
    pub fn sizes(&self) -> IndexSizes {
        let (paths, keys) = {
            let by_path = self.by_path.lock().expect("no code panics holding the path index");
            (by_path.map.len(), by_path.keys)
        };
        let t = self.tags.lock().expect("no code panics holding the tag index");
        IndexSizes { paths, keys, tags: t.keys.len(), tagged_keys: t.of_key.len() }
    }

    pub fn clear(&self) {
        *self.by_path.lock().expect("no code panics holding the path index") = ByPath::default();
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
            index.add(key, 1, &[]);
        }
        index.add("/a/1 h", 2, &["user-1".to_string()]);
        index.add("/b/1 h", 2, &["old".to_string()]);
        index.add("/b/1 h", 3, &["user-1".to_string(), "b".to_string()]);
        assert!(index.tagged("old").is_empty(), "a key's old tags are dropped when it is stored again");
        index.remove("/b/1 h", 2);
        assert_eq!(index.tagged("b"), ["/b/1 h"], "a replaced slot's removal leaves its successor");
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
        assert_eq!(index.sizes(), IndexSizes { paths: 1, keys: 1, tags: 2, tagged_keys: 2 });
        index.remove("/b/1 h", 3);
        assert_eq!(index.paths(), 0);
        assert_eq!(index.sizes(), IndexSizes { paths: 0, keys: 0, tags: 1, tagged_keys: 1 }, "/a/1 keeps its tag");
        index.remove("/a/1 h", 2);
        assert!(index.tagged("user-1").is_empty() && index.tagged("b").is_empty(), "tags follow removals");
        assert!(index.take_matching(&Glob::new("*")).is_empty());
    }
}
