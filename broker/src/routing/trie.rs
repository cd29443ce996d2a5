//! The subscription tree: topic filters split by level, with `+` and `#` as ordinary child
//! keys. Matching a topic walks only the branches that can match, so its cost grows with
//! the topic's depth and the number of matches, not with the number of subscriptions.
//!
//! Filters without wildcards (a device's own topics, every IM inbox) are most of them and
//! are kept apart, whole, in one hash map: matching a topic looks it up once and walks the
//! tree only for the wildcard filters and shared groups, and such a filter costs one map
//! entry instead of a node per level.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchboard_proto::SubscriptionOptions;

use crate::message::ShareKey;

/// One session's subscription at a node.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The session's unique id.
    pub uid: u64,
    pub opts: SubscriptionOptions,
    pub id: Option<u32>,
}

/// Members of one `$share/{group}/{filter}`; each message goes to one of them.
#[derive(Debug)]
pub struct SharedGroup {
    pub key: Arc<ShareKey>,
    pub members: Vec<Subscriber>,
    next: AtomicUsize,
}

impl SharedGroup {
    /// Picks the next member in round robin order, preferring members that `online` says
    /// are connected and skipping `exclude`.
    pub fn pick(&self, exclude: Option<u64>, online: impl Fn(u64) -> bool) -> Option<&Subscriber> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|i| &self.members[(start + i) % n])
            .filter(|m| Some(m.uid) != exclude);
        let mut fallback = None;
        for m in candidates {
            if online(m.uid) {
                return Some(m);
            }
            fallback.get_or_insert(m);
        }
        fallback
    }
}

/// Children by level: a fast hasher, seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Node {
    /// Children by literal level.
    children: HashMap<Box<str>, Node>,
    /// The `+` and `#` children, apart: a topic's walk looks for them at every level,
    /// and most levels have none.
    plus: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    subs: Vec<Subscriber>,
    shared: HashMap<Box<str>, SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.subs.is_empty()
            && self.shared.is_empty()
    }

    fn child(&self, level: &str) -> Option<&Node> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.children.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node {
        match level {
            "+" => self.plus.get_or_insert_default(),
            "#" => self.hash.get_or_insert_default(),
            _ => self.children.entry(level.into()).or_default(),
        }
    }

    fn remove_child(&mut self, level: &str) {
        match level {
            "+" => self.plus = None,
            "#" => self.hash = None,
            _ => {
                self.children.remove(level);
            }
        }
    }
}

/// A match found by [`Trie::for_each_match`].
pub enum Match<'a> {
    Direct(&'a Subscriber),
    Shared(&'a SharedGroup),
}

/// All subscriptions of the broker.
#[derive(Debug, Default)]
pub struct Trie {
    /// Wildcard filters and shared groups.
    root: Node,
    /// The other filters (no `+`, no `#`, not shared), whole.
    exact: HashMap<Box<str>, Vec<Subscriber>>,
}

/// Whether `filter` matches only the topic spelled the same.
fn is_exact(filter: &str) -> bool {
    !filter.contains(['+', '#'])
}

impl Trie {
    /// Adds or replaces the subscription of session `sub.uid` to `filter`. Returns true if
    /// it replaced one.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, sub: Subscriber) -> bool {
        if group.is_none() && is_exact(filter) {
            let list = match self.exact.get_mut(filter) {
                Some(list) => list,
                None => self.exact.entry(filter.into()).or_default(),
            };
            return upsert(list, sub);
        }
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_or_insert(level);
        }
        let list = match group {
            None => &mut node.subs,
            Some(g) => {
                &mut node
                    .shared
                    .entry(g.into())
                    .or_insert_with(|| SharedGroup {
                        key: Arc::new(ShareKey {
                            group: g.to_owned(),
                            filter: filter.to_owned(),
                        }),
                        members: Vec::new(),
                        next: AtomicUsize::new(0),
                    })
                    .members
            }
        };
        upsert(list, sub)
    }

    /// Removes session `uid`'s subscription to `filter`. Returns true if there was one.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, uid: u64) -> bool {
        if group.is_none() && is_exact(filter) {
            let Some(list) = self.exact.get_mut(filter) else {
                return false;
            };
            let before = list.len();
            list.retain(|s| s.uid != uid);
            let removed = before != list.len();
            if list.is_empty() {
                self.exact.remove(filter);
            }
            return removed;
        }
        let levels: Vec<&str> = filter.split('/').collect();
        remove_at(&mut self.root, &levels, group, uid)
    }

    /// Calls `f` for every subscription matching topic name `topic`.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(Match<'a>)) {
        if let Some(list) = self.exact.get(topic) {
            for s in list {
                f(Match::Direct(s));
            }
        }
        walk(&self.root, Some(topic), topic.starts_with('$'), &mut f);
    }

    /// The shared group `key`, if it still exists.
    pub fn shared_group(&self, key: &ShareKey) -> Option<&SharedGroup> {
        let mut node = &self.root;
        for level in key.filter.split('/') {
            node = node.child(level)?;
        }
        node.shared.get(key.group.as_str())
    }
}

/// Adds `sub` to `list` or replaces the subscription of the same session; true if it
/// replaced one.
fn upsert(list: &mut Vec<Subscriber>, sub: Subscriber) -> bool {
    if let Some(existing) = list.iter_mut().find(|s| s.uid == sub.uid) {
        *existing = sub;
        true
    } else {
        list.push(sub);
        false
    }
}

fn remove_at(node: &mut Node, levels: &[&str], group: Option<&str>, uid: u64) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            None => {
                let before = node.subs.len();
                node.subs.retain(|s| s.uid != uid);
                before != node.subs.len()
            }
            Some(g) => {
                let Some(sg) = node.shared.get_mut(g) else {
                    return false;
                };
                let before = sg.members.len();
                sg.members.retain(|s| s.uid != uid);
                let removed = before != sg.members.len();
                if sg.members.is_empty() {
                    node.shared.remove(g);
                }
                removed
            }
        };
    };
    let Some(child) = node.child_mut(first) else {
        return false;
    };
    let removed = remove_at(child, rest, group, uid);
    if child.is_empty() {
        node.remove_child(first);
    }
    removed
}

fn emit<'a>(node: &'a Node, f: &mut impl FnMut(Match<'a>)) {
    for s in &node.subs {
        f(Match::Direct(s));
    }
    for g in node.shared.values() {
        f(Match::Shared(g));
    }
}

/// Matches the levels in `rest` (`None` once every level is consumed) below `node`.
fn walk<'a>(node: &'a Node, rest: Option<&str>, dollar_root: bool, f: &mut impl FnMut(Match<'a>)) {
    // [MQTT-4.7.2-1] wildcards at the first level do not match `$` topics.
    let wildcards = !dollar_root;
    if wildcards && let Some(hash) = &node.hash {
        emit(hash, f);
    }
    let Some(rest) = rest else {
        emit(node, f);
        return;
    };
    let (first, tail) = match rest.split_once('/') {
        Some((first, tail)) => (first, Some(tail)),
        None => (rest, None),
    };
    if let Some(child) = node.children.get(first) {
        walk(child, tail, false, f);
    }
    if wildcards && let Some(plus) = &node.plus {
        walk(plus, tail, false, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(uid: u64) -> Subscriber {
        Subscriber {
            uid,
            opts: SubscriptionOptions::default(),
            id: None,
        }
    }

    fn matches(t: &Trie, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        t.for_each_match(topic, |m| {
            if let Match::Direct(s) = m {
                out.push(s.uid)
            }
        });
        out.sort();
        out
    }

    #[test]
    fn walks_wildcards_and_respects_dollar_topics() {
        let mut t = Trie::default();
        t.insert("a/+/c", None, sub(1));
        t.insert("a/#", None, sub(2));
        t.insert("#", None, sub(3));
        t.insert("$SYS/#", None, sub(4));
        t.insert("+/b/c", None, sub(5));
        assert_eq!(matches(&t, "a/b/c"), [1, 2, 3, 5]);
        assert_eq!(matches(&t, "a"), [2, 3]);
        assert_eq!(matches(&t, "$SYS/x"), [4]);
        assert!(t.remove("a/#", None, 2));
        assert!(!t.remove("a/#", None, 2));
        assert_eq!(matches(&t, "a/b/c"), [1, 3, 5]);
    }

    #[test]
    fn empty_branches_are_pruned() {
        let mut t = Trie::default();
        t.insert("x/y/+", None, sub(1));
        t.insert("x/y/z", None, sub(2));
        t.remove("x/y/+", None, 1);
        t.remove("x/y/z", None, 2);
        assert!(t.root.is_empty());
        assert!(t.exact.is_empty());
    }

    #[test]
    fn exact_filters_match_with_wildcard_ones_and_stay_out_of_the_tree() {
        let mut t = Trie::default();
        t.insert("a/b/c", None, sub(1));
        t.insert("a/b/c", None, sub(2));
        t.insert("a/+/c", None, sub(3));
        t.insert("$im/t/1/u/7", None, sub(4));
        t.insert("/", None, sub(5));
        // Replacing keeps one entry per session.
        assert!(t.insert("a/b/c", None, sub(1)));
        assert!(!t.root.children.contains_key("$im"));
        assert_eq!(matches(&t, "a/b/c"), [1, 2, 3]);
        assert_eq!(matches(&t, "a/b"), Vec::<u64>::new());
        assert_eq!(matches(&t, "a/b/c/d"), Vec::<u64>::new());
        assert_eq!(matches(&t, "$im/t/1/u/7"), [4]);
        assert_eq!(matches(&t, "$im/t/1/u/70"), Vec::<u64>::new());
        assert_eq!(matches(&t, "/"), [5]);
        assert!(t.remove("a/b/c", None, 1));
        assert!(!t.remove("a/b/c", None, 1));
        assert_eq!(matches(&t, "a/b/c"), [2, 3]);
        // A shared group's filter stays in the tree even without wildcards.
        t.insert("a/b/c", Some("g"), sub(9));
        let mut shared = 0;
        t.for_each_match("a/b/c", |m| {
            shared += usize::from(matches!(m, Match::Shared(_)))
        });
        assert_eq!(shared, 1);
    }

    fn level() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec!["a", "b", "", "$s"])
    }

    proptest::proptest! {
        /// The tree with its exact-filter map matches what the protocol's own filter
        /// matcher says, for filters with and without wildcards.
        #[test]
        fn matches_like_the_filter_matcher(
            filters in proptest::collection::vec(
                (
                    proptest::collection::vec(
                        proptest::prop_oneof![level(), proptest::strategy::Just("+")],
                        1..4,
                    ),
                    proptest::bool::ANY,
                ),
                1..12,
            ),
            topics in proptest::collection::vec(proptest::collection::vec(level(), 1..5), 1..8),
        ) {
            let filters: Vec<String> = filters
                .into_iter()
                .map(|(levels, hash)| {
                    let mut f = levels.join("/");
                    if hash {
                        f.push_str("/#");
                    }
                    f
                })
                .collect();
            let mut t = Trie::default();
            for (uid, f) in filters.iter().enumerate() {
                t.insert(f, None, sub(uid as u64));
            }
            for topic in topics.iter().map(|l| l.join("/")) {
                let want: Vec<u64> = filters
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| switchboard_proto::topic::matches(f, &topic))
                    .map(|(uid, _)| uid as u64)
                    .collect();
                proptest::prop_assert_eq!(matches(&t, &topic), want, "topic {:?}", topic);
            }
        }
    }
}
