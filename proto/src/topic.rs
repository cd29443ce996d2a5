//! Topic names, topic filters and matching (spec §4.7, §4.8.2).
//!
//! Names carry no wildcards; filters may use `+` for one level and `#` for the rest. Topics
//! that start with `$` are not matched by a filter that starts with a wildcard
//! ([MQTT-4.7.2-1]). Shared subscriptions are written `$share/{group}/{filter}`.

/// Checks a PUBLISH topic name.
pub fn validate_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("[MQTT-4.7.3-1] topic name is empty");
    }
    if topic.len() > 65_535 {
        return Err("[MQTT-4.7.3-3] topic name is longer than 65,535 bytes");
    }
    if topic.contains(['+', '#']) {
        return Err("[MQTT-3.3.2-2] topic name contains a wildcard");
    }
    Ok(())
}

/// Checks a topic filter (the part after `$share/{group}/` for shared subscriptions).
pub fn validate_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("[MQTT-4.7.3-1] topic filter is empty");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("[MQTT-4.7.1-1] '#' must be the last level and stand alone");
        }
        if level.contains('+') && level != "+" {
            return Err("[MQTT-4.7.1-2] '+' must occupy a whole level");
        }
    }
    Ok(())
}

/// A subscription filter split into its shared group, if any, and the filter proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterRef<'a> {
    /// `Some(group)` for `$share/{group}/{filter}`.
    pub share_group: Option<&'a str>,
    pub filter: &'a str,
}

/// Parses and validates a subscription filter, recognising shared subscriptions.
pub fn parse_filter(raw: &str) -> Result<FilterRef<'_>, &'static str> {
    if let Some(rest) = raw.strip_prefix("$share/") {
        let (group, filter) = rest
            .split_once('/')
            .ok_or("[MQTT-4.8.2-2] shared subscription without a topic filter")?;
        if group.is_empty() || group.contains(['+', '#']) {
            return Err("[MQTT-4.8.2-1] share name is empty or has a wildcard");
        }
        validate_filter(filter)?;
        return Ok(FilterRef {
            share_group: Some(group),
            filter,
        });
    }
    if raw == "$share" {
        return Err("[MQTT-4.8.2-1] shared subscription without a share name");
    }
    validate_filter(raw)?;
    Ok(FilterRef {
        share_group: None,
        filter: raw,
    })
}

/// True when `filter` (already validated) matches topic name `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when the filter contains a wildcard.
pub fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples_of_multi_level_wildcard() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(!matches("sport/tennis/#", "sport/football"));
    }

    #[test]
    fn spec_examples_of_single_level_wildcard() {
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_topics_not_matched_by_root_wildcards() {
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(matches("$SYS/+/uptime", "$SYS/broker/uptime"));
    }

    #[test]
    fn invalid_filters_are_rejected() {
        for bad in ["", "a/#/b", "a#", "a/b+", "+a", "#/"] {
            assert!(validate_filter(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["#", "+", "a/+/b", "/", "a//b", "+/+/#"] {
            assert!(validate_filter(good).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn shared_subscriptions_parse() {
        let f = parse_filter("$share/g1/a/+/c").expect("valid");
        assert_eq!(f.share_group, Some("g1"));
        assert_eq!(f.filter, "a/+/c");
        assert!(parse_filter("$share/g1").is_err());
        assert!(parse_filter("$share//a").is_err());
        assert!(parse_filter("$share/g+/a").is_err());
        assert!(parse_filter("$share/g/a/#/b").is_err());
    }
}
