//! Tests of the remote-interest table: the trie against the reference matcher, and the
//! peer views (order, gaps, snapshots in parts, goodbye, silence).

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just(String::new()),
        Just("$s".to_owned())
    ]
}

fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![level(), Just("+".to_owned())], 1..4),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".into());
            }
            l.join("/")
        })
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
}

proptest! {
    #[test]
    fn the_trie_matches_exactly_when_a_filter_does(
        filters in prop::collection::vec(filter(), 0..6),
        removed in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        topics in prop::collection::vec(topic(), 1..8),
    ) {
        let mut t = FilterTrie::default();
        let mut held = filters.clone();
        for f in &filters {
            t.insert(f);
        }
        for i in removed {
            if held.is_empty() {
                break;
            }
            let f = held.remove(i.index(held.len()));
            prop_assert!(t.remove(&f));
        }
        prop_assert_eq!(t.len(), held.len());
        for topic in &topics {
            let want = held.iter().any(|f| switchboard_proto::topic::matches(f, topic));
            prop_assert_eq!(t.matches(topic), want, "{:?} on {}", held, topic);
        }
    }
}

fn snap(seq: u64, filters: &[&str]) -> Announce {
    Announce::Snap {
        seq,
        part: 0,
        parts: 1,
        filters: filters.iter().map(|f| (*f).to_owned()).collect(),
    }
}

fn delta(seq: u64, add: &[&str], remove: &[&str]) -> Announce {
    Announce::Delta {
        seq,
        add: add.iter().map(|f| (*f).to_owned()).collect(),
        remove: remove.iter().map(|f| (*f).to_owned()).collect(),
    }
}

#[test]
fn a_peer_counts_once_its_snapshot_is_in_and_follows_its_deltas() {
    let now = Instant::now();
    let mut r = RemoteInterest::default();
    assert!(!r.wants("a/b"), "nobody: nothing to forward");
    let re = r.apply("me", "n2", Announce::Hello { target: None }, now);
    assert!(re.send_snapshot && !re.ask_snapshot);
    assert!(r.wants("x"), "unknown peer: everything forwarded");
    r.apply("me", "n2", snap(3, &["a/+"]), now);
    assert_eq!(r.unknown(), 0);
    assert!(r.wants("a/b") && !r.wants("x"));
    r.apply("me", "n2", delta(4, &["x"], &["a/+"]), now);
    assert!(r.wants("x") && !r.wants("a/b"));
    assert_eq!(
        r.apply("me", "n2", Announce::Tick { seq: 4 }, now),
        Reaction::default()
    );
    // A hello for another node is not for us.
    let re = r.apply(
        "me",
        "n3",
        Announce::Hello {
            target: Some("n2".into()),
        },
        now,
    );
    assert!(!re.send_snapshot);
    r.apply("me", "n2", Announce::Bye, now);
    r.forget("n3");
    assert_eq!(r.peers(), 0);
    assert!(!r.wants("x"));
}

#[test]
fn a_gap_makes_the_peer_unknown_until_a_new_snapshot_in_parts() {
    let now = Instant::now();
    let mut r = RemoteInterest::default();
    r.apply("me", "n2", snap(1, &["a"]), now);
    // Delta 3 without 2: lost one.
    let re = r.apply("me", "n2", delta(3, &["b"], &[]), now);
    assert!(re.ask_snapshot);
    assert!(r.wants("zzz"));
    // Asked again only after a while.
    let re = r.apply("me", "n2", Announce::Tick { seq: 3 }, now);
    assert!(!re.ask_snapshot);
    let later = now + Duration::from_secs(3);
    assert!(
        r.apply("me", "n2", Announce::Tick { seq: 3 }, later)
            .ask_snapshot
    );
    // A tick with another number than the last delta's: lost too.
    let mut q = RemoteInterest::default();
    q.apply("me", "n2", snap(1, &["a"]), now);
    assert!(
        q.apply("me", "n2", Announce::Tick { seq: 2 }, now)
            .ask_snapshot
    );
    // The snapshot in two parts.
    for (part, f) in [(0, "a"), (1, "b")] {
        r.apply(
            "me",
            "n2",
            Announce::Snap {
                seq: 3,
                part,
                parts: 2,
                filters: vec![f.into()],
            },
            later,
        );
        assert_eq!(r.unknown(), (1 - part) as usize);
    }
    assert!(r.wants("a") && r.wants("b") && !r.wants("c"));
    // Parts out of order: unknown again.
    let re = r.apply(
        "me",
        "n2",
        Announce::Snap {
            seq: 4,
            part: 1,
            parts: 2,
            filters: vec![],
        },
        later + Duration::from_secs(3),
    );
    assert!(re.ask_snapshot && r.wants("c"));
}

#[test]
fn first_heard_through_a_delta_or_tick_asks_for_a_snapshot() {
    let now = Instant::now();
    let mut r = RemoteInterest::default();
    assert!(
        r.apply("me", "n2", Announce::Tick { seq: 5 }, now)
            .ask_snapshot
    );
    assert!(r.wants("anything"));
    let mut q = RemoteInterest::default();
    assert!(q.apply("me", "n2", delta(5, &["a"], &[]), now).ask_snapshot);
}

#[test]
fn local_shared_groups_count_and_silent_peers_are_dropped() {
    let now = Instant::now();
    let mut r = RemoteInterest::default();
    r.add_local_shared("jobs/#");
    r.add_local_shared("jobs/#");
    r.remove_local_shared("jobs/#");
    assert!(r.wants("jobs/1"));
    r.remove_local_shared("jobs/#");
    assert!(!r.wants("jobs/1"));
    r.apply("me", "n2", Announce::Tick { seq: 0 }, now);
    assert_eq!(r.unknown(), 1);
    assert_eq!(
        r.prune(now + Duration::from_secs(31), Duration::from_secs(30)),
        vec!["n2".to_owned()]
    );
    assert_eq!((r.peers(), r.unknown()), (0, 0));
}

#[test]
fn acknowledgements_are_expected_from_known_peers_with_a_direct_match() {
    let now = Instant::now();
    let mut r = RemoteInterest::default();
    r.apply("me", "n2", snap(1, &["a/#", "$share/g/b"]), now);
    r.apply("me", "n3", snap(1, &["$share/g/a/x"]), now);
    r.apply("me", "n4", Announce::Hello { target: None }, now);
    assert_eq!(r.direct_peers("a/x"), vec!["n2".to_owned()]);
    assert!(
        r.direct_peers("b").is_empty(),
        "a queue group: one node, not known which"
    );
    assert!(r.wants("b"));
    r.apply("me", "n2", delta(2, &[], &["a/#"]), now);
    assert!(r.direct_peers("a/x").is_empty());
    assert!(r.is_known("n2") && !r.is_known("n4"));
}

#[test]
fn shared_groups_are_known_by_queue_name_across_peers_and_this_node() {
    use crate::cluster::interest::queue_name;
    let now = Instant::now();
    let mut r = RemoteInterest::default();
    r.apply("me", "n2", snap(1, &["$share/w/jobs/#", "direct/#"]), now);
    r.apply("me", "n3", snap(1, &["$share/w/jobs/#"]), now);
    r.local_group("w", "jobs/#", true);
    r.local_group("other", "jobs/+", true);
    let w = queue_name("w", "jobs/#");
    let o = queue_name("other", "jobs/+");
    let mut m = r.groups().matching("jobs/1");
    m.sort();
    let mut want = vec![w.clone(), o.clone()];
    want.sort();
    assert_eq!(m, want);
    assert!(
        r.groups().matching("direct/1").is_empty(),
        "direct is no group"
    );
    assert!(r.is_local_queue(&w) && r.is_local_queue(&o));
    // One holder gone at a time: the group stays while any node holds it.
    r.local_group("w", "jobs/#", false);
    assert!(!r.is_local_queue(&w));
    r.apply("me", "n2", delta(2, &[], &["$share/w/jobs/#"]), now);
    assert!(r.groups().has(&w));
    r.forget("n3");
    assert!(!r.groups().has(&w));
    assert_eq!(r.groups().matching("jobs/1"), vec![o]);
}
