//! Comparing two topic filters, for ACL rules: does a rule cover every topic a
//! subscription can match, and can a rule and a subscription match a common topic?
//!
//! Both follow the matching rules of spec §4.7, including [MQTT-4.7.2-1]: a filter that
//! starts with a wildcard matches no topic that starts with `$`. A topic name is a filter
//! without wildcards, so `covers(rule, topic)` is plain matching.

/// True when every topic that `filter` matches is also matched by `rule`.
pub fn covers(rule: &str, filter: &str) -> bool {
    if dollar_guard(rule, filter) {
        return false;
    }
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    let mut first = true;
    loop {
        match (r.next(), f.next()) {
            // `a/#` matches `a` and everything below it.
            (Some("#"), _) => return true,
            (None, None) => return true,
            // A leading `#` matches one level or more, as `+/#` does; elsewhere only `#`
            // covers `#`.
            (Some("+"), Some("#")) if first => return r.next() == Some("#") && r.next().is_none(),
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(_), Some("+")) => return false,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
        first = false;
    }
}

/// True when some topic is matched by both `rule` and `filter`.
pub fn overlaps(rule: &str, filter: &str) -> bool {
    if dollar_guard(rule, filter) || dollar_guard(filter, rule) {
        return false;
    }
    let mut r = rule.split('/');
    let mut f = filter.split('/');
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// [MQTT-4.7.2-1]: `wild` starts with a wildcard and `other` names only `$` topics.
fn dollar_guard(wild: &str, other: &str) -> bool {
    wild.starts_with(['+', '#']) && other.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::topic::matches;

    #[test]
    fn cover_examples() {
        assert!(covers("#", "a/b"));
        assert!(covers("#", "#"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/broker/+"));
    }

    #[test]
    fn overlap_examples() {
        assert!(overlaps("secret/#", "#"));
        assert!(overlaps("a/+/c", "a/b/+"));
        assert!(overlaps("a/#", "a"));
        assert!(!overlaps("a/b", "a/c"));
        assert!(!overlaps("a/+", "a"));
        assert!(!overlaps("#", "$SYS/#"));
        assert!(!overlaps("+/x", "$SYS/x"));
    }

    /// Checks both functions against the definition, by brute force over a small universe
    /// of topics and every filter over the same alphabet.
    #[test]
    fn agree_with_matching_over_a_small_universe() {
        let levels = ["a", "b", "$s"];
        let mut topics: Vec<String> = Vec::new();
        for n in 1..=3 {
            let mut acc = vec![String::new()];
            for depth in 0..n {
                acc = acc
                    .iter()
                    .flat_map(|p| {
                        levels
                            .iter()
                            .filter(move |l| depth == 0 || !l.starts_with('$'))
                            .map(move |l| {
                                if p.is_empty() {
                                    (*l).to_owned()
                                } else {
                                    format!("{p}/{l}")
                                }
                            })
                    })
                    .collect();
            }
            topics.extend(acc);
        }
        let mut filters: Vec<String> = Vec::new();
        let flev = ["a", "$s", "+", "#"];
        for n in 1..=3 {
            let mut acc = vec![String::new()];
            for depth in 0..n {
                acc = acc
                    .iter()
                    .filter(|p| !p.ends_with('#'))
                    .flat_map(|p| {
                        flev.iter()
                            .filter(move |l| depth == 0 || !l.starts_with('$'))
                            .map(move |l| {
                                if p.is_empty() {
                                    (*l).to_owned()
                                } else {
                                    format!("{p}/{l}")
                                }
                            })
                    })
                    .collect();
            }
            filters.extend(acc);
        }
        // Topics up to three levels show every difference between filters of up to three
        // levels, except that `#` also matches deeper topics: add one deeper level.
        let deep: Vec<String> = topics.iter().map(|t| format!("{t}/a")).collect();
        topics.extend(deep);
        for r in &filters {
            for f in &filters {
                let m: Vec<bool> = topics.iter().map(|t| matches(f, t)).collect();
                let want_cover = topics.iter().zip(&m).all(|(t, &fm)| !fm || matches(r, t));
                let want_overlap = topics.iter().zip(&m).any(|(t, &fm)| fm && matches(r, t));
                assert_eq!(covers(r, f), want_cover, "covers({r}, {f})");
                assert_eq!(overlaps(r, f), want_overlap, "overlaps({r}, {f})");
            }
        }
    }
}
