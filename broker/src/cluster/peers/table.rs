//! The other nodes' interest as this node knows it, sans-IO: which filters each peer has
//! subscribers for, fed by the peers' announcements ([`Announce`]), so that a local
//! publish that no other node wants never goes to NATS.
//!
//! Each peer numbers its announcements; a view is in force only while it is complete: a
//! peer first heard of, a gap in its numbers (a lost delta, a tick with another number)
//! or a snapshot still arriving makes it *unknown*, and while any peer is unknown every
//! topic counts as wanted (the caller forwards everything, as if there were no table) and
//! asks that peer for a snapshot. So the table errs only towards forwarding too much.
//!
//! Local shared groups count too: while the NATS link is up even this node's own
//! publishes reach its members only through NATS queue groups.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::wire::Announce;

/// A filter trie counting how many (peer, filter) pairs end at each node.
#[derive(Debug, Default)]
pub struct FilterTrie {
    root: Node,
    len: usize,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    plus: Option<Box<Node>>,
    /// Filters ending in `#` here.
    hash: usize,
    /// Filters ending exactly here.
    end: usize,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.hash == 0 && self.end == 0
    }
}

impl FilterTrie {
    /// (filter, count) pairs held, counting repeats.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn insert(&mut self, filter: &str) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            match level {
                "#" => {
                    node.hash += 1;
                    self.len += 1;
                    return;
                }
                "+" => node = node.plus.get_or_insert_with(Box::default),
                l => node = node.children.entry(l.to_owned()).or_default(),
            }
        }
        node.end += 1;
        self.len += 1;
    }

    /// Removes one count of `filter`; false if it was not there.
    pub fn remove(&mut self, filter: &str) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_in(&mut self.root, &levels);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Whether some filter matches `topic` (MQTT rules: `#` also matches the parent
    /// level; wildcards in the first level never match a topic starting with `$`).
    pub fn matches(&self, topic: &str) -> bool {
        let levels: Vec<&str> = topic.split('/').collect();
        matches_in(&self.root, &levels, 0, topic.starts_with('$'))
    }
}

fn remove_in(node: &mut Node, levels: &[&str]) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        if node.end == 0 {
            return false;
        }
        node.end -= 1;
        return true;
    };
    match *first {
        "#" if rest.is_empty() => {
            if node.hash == 0 {
                return false;
            }
            node.hash -= 1;
            true
        }
        "+" => {
            let Some(child) = node.plus.as_deref_mut() else {
                return false;
            };
            let removed = remove_in(child, rest);
            if child.is_empty() {
                node.plus = None;
            }
            removed
        }
        l => {
            let Some(child) = node.children.get_mut(l) else {
                return false;
            };
            let removed = remove_in(child, rest);
            if child.is_empty() {
                node.children.remove(l);
            }
            removed
        }
    }
}

fn matches_in(node: &Node, levels: &[&str], depth: usize, dollar: bool) -> bool {
    let wild = !(depth == 0 && dollar);
    if wild && node.hash > 0 {
        return true;
    }
    let Some((first, rest)) = levels.split_first() else {
        return node.end > 0;
    };
    if let Some(child) = node.children.get(*first)
        && matches_in(child, rest, depth + 1, dollar)
    {
        return true;
    }
    wild && node
        .plus
        .as_deref()
        .is_some_and(|p| matches_in(p, rest, depth + 1, dollar))
}

/// The topic filter of an announced filter (`$share/{group}/{filter}` for a shared
/// group's), and whether it is a direct subscription's.
fn split(raw: &str) -> (&str, bool) {
    match switchboard_proto::topic::parse_filter(raw) {
        Ok(f) => (f.filter, f.share_group.is_none()),
        Err(_) => (raw, true),
    }
}

/// Counts announced filter `raw` of a peer in `all` (and in `direct` if it is direct, in
/// `groups` if it is a shared group's).
fn link(all: &mut FilterTrie, direct: &mut FilterTrie, groups: &mut Groups, raw: &str) {
    let (f, is_direct) = split(raw);
    all.insert(f);
    if is_direct {
        direct.insert(f);
    } else {
        groups.add(raw);
    }
}

fn unlink(all: &mut FilterTrie, direct: &mut FilterTrie, groups: &mut Groups, raw: &str) {
    let (f, is_direct) = split(raw);
    all.remove(f);
    if is_direct {
        direct.remove(f);
    } else {
        groups.remove(raw);
    }
}

/// The shared groups held anywhere in the cluster (peers' and this node's), by NATS queue
/// name (`cluster::interest::queue_name`), with their filter and how many holders count:
/// a QoS 1/2 message matching one waits for one node's acknowledgement for that group
/// (`cluster::hop`). Looked through per publish: sized for tens to a few thousand groups.
#[derive(Debug, Default)]
pub struct Groups {
    by_queue: HashMap<String, (String, usize)>,
}

impl Groups {
    fn add(&mut self, raw: &str) {
        if let Ok(f) = switchboard_proto::topic::parse_filter(raw)
            && let Some(g) = f.share_group
        {
            self.add_group(g, f.filter);
        }
    }

    fn remove(&mut self, raw: &str) {
        if let Ok(f) = switchboard_proto::topic::parse_filter(raw)
            && let Some(g) = f.share_group
        {
            self.remove_group(g, f.filter);
        }
    }

    fn add_group(&mut self, group: &str, filter: &str) {
        let q = crate::cluster::interest::queue_name(group, filter);
        self.by_queue
            .entry(q)
            .or_insert_with(|| (filter.to_owned(), 0))
            .1 += 1;
    }

    fn remove_group(&mut self, group: &str, filter: &str) {
        let q = crate::cluster::interest::queue_name(group, filter);
        if let Some((_, n)) = self.by_queue.get_mut(&q) {
            *n -= 1;
            if *n == 0 {
                self.by_queue.remove(&q);
            }
        }
    }

    /// The queue names of the groups whose filter matches `topic`.
    pub fn matching(&self, topic: &str) -> Vec<String> {
        self.by_queue
            .iter()
            .filter(|(_, (f, _))| switchboard_proto::topic::matches(f, topic))
            .map(|(q, _)| q.clone())
            .collect()
    }

    /// Whether some node holds the group of queue name `queue`.
    pub fn has(&self, queue: &str) -> bool {
        self.by_queue.contains_key(queue)
    }
}

#[derive(Debug)]
enum State {
    /// Its filters are in the trie, up to announcement `seq`.
    Known,
    /// Not known (first heard of, or a gap): everything counts as wanted.
    Unknown,
    /// A snapshot at `seq` arriving in parts; `got` parts so far.
    Loading {
        seq: u64,
        parts: u32,
        got: u32,
        filters: Vec<String>,
    },
}

#[derive(Debug)]
struct Peer {
    state: State,
    seq: u64,
    /// As announced (shared groups' as `$share/{group}/{filter}`).
    filters: HashSet<String>,
    /// Its direct subscriptions' filters (each message reaches them all: the hop's
    /// acknowledgements are expected from these peers).
    direct: FilterTrie,
    heard: Instant,
    /// When this node last asked it for a snapshot.
    asked: Option<Instant>,
}

/// What the caller must do after [`RemoteInterest::apply`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaction {
    /// Send this node's snapshot (a peer said hello).
    pub send_snapshot: bool,
    /// Ask the peer for its snapshot (its view here is unknown).
    pub ask_snapshot: bool,
}

/// How often to ask an unknown peer for a snapshot again.
const ASK_AGAIN: Duration = Duration::from_secs(2);

/// The other nodes' filters, and this node's shared-group filters.
#[derive(Debug, Default)]
pub struct RemoteInterest {
    trie: FilterTrie,
    peers: HashMap<String, Peer>,
    /// Peers whose state is not `Known`.
    unknown: usize,
    local_shared: HashMap<String, usize>,
    /// Shared groups across the cluster (this node's included).
    groups: Groups,
    /// This node's shared groups by queue name, with their subscription counts.
    local_groups: HashMap<String, usize>,
}

impl RemoteInterest {
    /// Whether a message on `topic` must go to NATS: some peer (or a local shared group)
    /// has a matching filter, or some peer's view is not known.
    pub fn wants(&self, topic: &str) -> bool {
        self.unknown > 0 || self.trie.matches(topic)
    }

    /// The peers with a direct subscription matching `topic`: each gets a message on it
    /// through NATS, and acknowledges a QoS 1/2 one (see `cluster::hop`). A peer whose view
    /// is being reloaded counts with the filters it had (a peer that no longer has one
    /// still acknowledges what it is sent).
    pub fn direct_peers(&self, topic: &str) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, p)| p.direct.matches(topic))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The shared groups held anywhere in the cluster.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// Whether this node holds the shared group of queue name `queue`.
    pub fn is_local_queue(&self, queue: &str) -> bool {
        self.local_groups.contains_key(queue)
    }

    /// A local shared subscription `$share/{group}/{filter}` was added (`added`) or removed.
    pub fn local_group(&mut self, group: &str, filter: &str, added: bool) {
        let key = crate::cluster::interest::queue_name(group, filter);
        if added {
            let n = self.local_groups.entry(key).or_insert(0);
            *n += 1;
            if *n == 1 {
                self.groups.add_group(group, filter);
            }
        } else if let Some(n) = self.local_groups.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.local_groups.remove(&key);
                self.groups.remove_group(group, filter);
            }
        }
    }

    /// Whether `node` is in the table.
    pub fn has(&self, node: &str) -> bool {
        self.peers.contains_key(node)
    }

    /// Whether `node` is a peer with a known view.
    pub fn is_known(&self, node: &str) -> bool {
        self.peers
            .get(node)
            .is_some_and(|p| matches!(p.state, State::Known))
    }

    /// Peers heard of.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Peers whose view is not known (everything is forwarded while this is not 0).
    pub fn unknown(&self) -> usize {
        self.unknown
    }

    /// Filters held across peers (and local shared groups).
    pub fn filters(&self) -> usize {
        self.trie.len()
    }

    /// A local shared subscription to `filter` was added.
    pub fn add_local_shared(&mut self, filter: &str) {
        let n = self.local_shared.entry(filter.to_owned()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.trie.insert(filter);
        }
    }

    /// A local shared subscription to `filter` was removed.
    pub fn remove_local_shared(&mut self, filter: &str) {
        if let Some(n) = self.local_shared.get_mut(filter) {
            *n -= 1;
            if *n == 0 {
                self.local_shared.remove(filter);
                self.trie.remove(filter);
            }
        }
    }

    fn set_state(&mut self, node: &str, state: State) {
        let Some(p) = self.peers.get_mut(node) else {
            return;
        };
        let was_known = matches!(p.state, State::Known);
        let is_known = matches!(state, State::Known);
        p.state = state;
        match (was_known, is_known) {
            (true, false) => self.unknown += 1,
            (false, true) => self.unknown -= 1,
            _ => {}
        }
    }

    /// The view of `node` is lost: unknown until its next snapshot. Whether to ask.
    fn lose(&mut self, node: &str, now: Instant) -> bool {
        self.set_state(node, State::Unknown);
        let Some(p) = self.peers.get_mut(node) else {
            return false;
        };
        let ask = p.asked.is_none_or(|t| now.duration_since(t) >= ASK_AGAIN);
        if ask {
            p.asked = Some(now);
        }
        ask
    }

    /// Applies an announcement from `node` (never this node's own); `me` is this node.
    pub fn apply(&mut self, me: &str, node: &str, a: Announce, now: Instant) -> Reaction {
        let mut r = Reaction::default();
        if let Announce::Bye = a {
            self.forget(node);
            return r;
        }
        if !self.peers.contains_key(node) {
            self.peers.insert(
                node.to_owned(),
                Peer {
                    state: State::Known,
                    seq: 0,
                    filters: HashSet::new(),
                    direct: FilterTrie::default(),
                    heard: now,
                    asked: None,
                },
            );
            // New: unknown until its snapshot (a hello is followed by one).
            self.set_state(node, State::Unknown);
            if !matches!(a, Announce::Hello { .. } | Announce::Snap { part: 0, .. }) {
                r.ask_snapshot = self.lose(node, now);
            }
        }
        if let Some(p) = self.peers.get_mut(node) {
            p.heard = now;
        }
        match a {
            Announce::Hello { target } => {
                r.send_snapshot = target.as_deref().is_none_or(|t| t == me);
            }
            Announce::Snap {
                seq,
                part,
                parts,
                filters,
            } => self.snapshot_part(node, seq, part, parts, filters, now, &mut r),
            Announce::Delta { seq, add, remove } => {
                let Some(p) = self.peers.get_mut(node) else {
                    return r;
                };
                match p.state {
                    State::Known if seq == p.seq + 1 => {
                        p.seq = seq;
                        for f in remove {
                            if p.filters.remove(&f) {
                                unlink(&mut self.trie, &mut p.direct, &mut self.groups, &f);
                            }
                        }
                        for f in add {
                            if p.filters.insert(f.clone()) {
                                link(&mut self.trie, &mut p.direct, &mut self.groups, &f);
                            }
                        }
                    }
                    // A snapshot is on its way (or asked for).
                    State::Loading { seq: s, .. } if seq <= s => {}
                    _ => r.ask_snapshot |= self.lose(node, now),
                }
            }
            Announce::Tick { seq } => {
                let Some(p) = self.peers.get(node) else {
                    return r;
                };
                let lost = match p.state {
                    State::Known => seq != p.seq,
                    State::Unknown | State::Loading { .. } => true,
                };
                if lost {
                    r.ask_snapshot |= self.lose(node, now);
                }
            }
            Announce::Bye => {}
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn snapshot_part(
        &mut self,
        node: &str,
        seq: u64,
        part: u32,
        parts: u32,
        filters: Vec<String>,
        now: Instant,
        r: &mut Reaction,
    ) {
        let Some(p) = self.peers.get_mut(node) else {
            return;
        };
        let next = match std::mem::replace(&mut p.state, State::Unknown) {
            _ if part == 0 => Some((seq, parts, 1, filters)),
            State::Loading {
                seq: s,
                parts: n,
                got,
                filters: mut f,
            } if s == seq && n == parts && got == part => {
                f.extend(filters);
                Some((seq, parts, got + 1, f))
            }
            _ => None,
        };
        // The replace above bypassed `set_state`: count again.
        self.recount();
        match next {
            Some((seq, parts, got, filters)) if got >= parts => {
                let Some(p) = self.peers.get_mut(node) else {
                    return;
                };
                for f in p.filters.drain() {
                    unlink(&mut self.trie, &mut p.direct, &mut self.groups, &f);
                }
                for f in filters {
                    if p.filters.insert(f.clone()) {
                        link(&mut self.trie, &mut p.direct, &mut self.groups, &f);
                    }
                }
                p.seq = seq;
                p.asked = None;
                self.set_state(node, State::Known);
            }
            Some((seq, parts, got, filters)) => self.set_state(
                node,
                State::Loading {
                    seq,
                    parts,
                    got,
                    filters,
                },
            ),
            None => r.ask_snapshot |= self.lose(node, now),
        }
    }

    /// Recomputes the unknown count from the peers' states.
    fn recount(&mut self) {
        self.unknown = self
            .peers
            .values()
            .filter(|p| !matches!(p.state, State::Known))
            .count();
    }

    /// Drops `node` (it said goodbye, or fell silent).
    pub fn forget(&mut self, node: &str) {
        if let Some(mut p) = self.peers.remove(node) {
            for f in p.filters.drain() {
                unlink(&mut self.trie, &mut p.direct, &mut self.groups, &f);
            }
            if !matches!(p.state, State::Known) {
                self.unknown -= 1;
            }
        }
    }

    /// Drops the peers not heard from for `silence` (a node that died without a goodbye
    /// ticks no more); returns them.
    pub fn prune(&mut self, now: Instant, silence: Duration) -> Vec<String> {
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.heard) > silence)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            self.forget(n);
        }
        gone
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
