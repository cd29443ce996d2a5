//! The mapping's examples, and property tests: every topic round-trips, and an MQTT filter
//! matches a topic exactly when one of its subjects matches the topic's subject under a
//! reference NATS matcher written here from the NATS subject rules.

use proptest::prelude::*;
use switchboard_proto::topic;

use super::*;

fn map() -> SubjectMap {
    SubjectMap::new("sb").expect("valid prefix")
}

/// NATS subject matching: tokens split on `.`, `*` matches one token, `>` (last) matches
/// one or more tokens.
fn nats_matches(pattern: &str, subject: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    for (i, tok) in p.iter().enumerate() {
        match *tok {
            ">" => return i == p.len() - 1 && s.len() > i,
            "*" => {
                if i >= s.len() {
                    return false;
                }
            }
            lit => {
                if s.get(i) != Some(&lit) {
                    return false;
                }
            }
        }
    }
    p.len() == s.len()
}

/// A subject NATS accepts for publishing: non-empty tokens, no whitespace, no wildcard.
fn valid_publish_subject(s: &str) -> bool {
    s.split('.')
        .all(|t| !t.is_empty() && t != "*" && t != ">" && !t.chars().any(char::is_whitespace))
}

#[test]
fn plain_topics_map_to_readable_subjects() {
    let m = map();
    assert_eq!(m.topic_subject("sensors/1/temp"), "sb.m.sensors.1.temp");
    assert_eq!(m.topic_subject("$SYS/broker/load"), "sb.s.$SYS.broker.load");
    assert_eq!(m.topic_subject("a.b/c d/*/>"), "sb.m.a%2Eb.c%20d.%2A.%3E");
    assert_eq!(m.topic_subject("/a//"), "sb.m.%.a.%.%");
    assert_eq!(m.topic_subject("设备/温度"), "sb.m.设备.温度");
}

#[test]
fn wildcards_map_to_nats_wildcards_and_hash_covers_the_parent() {
    let m = map();
    assert_eq!(m.filter_subjects("a/+/c"), ["sb.m.a.*.c"]);
    assert_eq!(m.filter_subjects("a/#"), ["sb.m.a", "sb.m.a.>"]);
    assert_eq!(m.filter_subjects("#"), ["sb.m.>"]);
    assert_eq!(m.filter_subjects("+/#"), ["sb.m.*", "sb.m.*.>"]);
    assert_eq!(m.filter_subjects("$SYS/#"), ["sb.s.$SYS", "sb.s.$SYS.>"]);
}

#[test]
fn foreign_or_malformed_subjects_are_not_topics() {
    let m = map();
    assert_eq!(m.subject_topic("other.m.a"), None);
    assert_eq!(m.subject_topic("sb.x.a"), None);
    assert_eq!(m.subject_topic("sb.m.a%4"), None);
    assert_eq!(m.subject_topic("sb.m.a%ZZ"), None);
    assert_eq!(m.subject_topic("sb.m.a.*"), None);
    // A `$` topic under the ordinary root would alias `sb.s.$x`.
    assert_eq!(m.subject_topic("sb.m.$x"), None);
    assert_eq!(m.subject_topic("sb.m.a"), Some("a".into()));
}

#[test]
fn bad_prefixes_are_refused() {
    for p in ["", "a..b", "a b", "*", "a.>", "."] {
        assert!(SubjectMap::new(p).is_err(), "{p:?}");
    }
    assert!(SubjectMap::new("prod.sb").is_ok());
}

/// Levels drawn from characters that stress the escaping, so that generated filters and
/// topics often share levels (and so often match).
fn level() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "b", ".", " ", "*", ">", "%", "$", "é", "\t", "\u{3000}", "%41", "\u{1}",
        ]),
        0..3,
    )
    .prop_map(|parts| parts.concat())
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid topic", |t| topic::validate_topic_name(t).is_ok())
}

fn filter() -> impl Strategy<Value = String> {
    let lvl = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (prop::collection::vec(lvl, 0..5), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#".into());
            }
            levels.join("/")
        })
        .prop_filter("valid filter", |f| topic::validate_filter(f).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_topic_round_trips(t in topic_name()) {
        let m = map();
        let s = m.topic_subject(&t);
        prop_assert!(valid_publish_subject(&s), "{s:?}");
        prop_assert_eq!(m.subject_topic(&s), Some(t));
    }

    #[test]
    fn mqtt_matching_equals_nats_matching(f in filter(), t in topic_name()) {
        let m = map();
        let subject = m.topic_subject(&t);
        let nats = m.filter_subjects(&f).iter().any(|p| nats_matches(p, &subject));
        prop_assert_eq!(topic::matches(&f, &t), nats, "filter {:?} topic {:?} subject {:?} patterns {:?}",
            f, t, subject, m.filter_subjects(&f));
    }

    #[test]
    fn a_filter_built_from_a_topic_matches_it(t in topic_name(), cut in 0usize..5, plus in 0usize..5) {
        // Filters derived from the topic itself (a level turned into `+`, a tail into `#`)
        // must match: the random pairs above rarely do for long topics.
        let m = map();
        let mut levels: Vec<String> = t.split('/').map(str::to_owned).collect();
        if plus < levels.len() && !(plus == 0 && t.starts_with('$')) {
            levels[plus] = "+".into();
        }
        if cut < levels.len() && !(cut == 0 && t.starts_with('$')) {
            levels.truncate(cut);
            levels.push("#".into());
        }
        let f = levels.join("/");
        prop_assert!(topic::matches(&f, &t), "{f:?} {t:?}");
        let subject = m.topic_subject(&t);
        prop_assert!(m.filter_subjects(&f).iter().any(|p| nats_matches(p, &subject)));
    }
}
