//! MQTT topics and filters ↔ NATS subjects, sans-IO.
//!
//! A topic's levels become a subject's tokens under `{prefix}.m` (ordinary topics) or
//! `{prefix}.s` (topics whose first level starts with `$`): MQTT's rule that a filter
//! starting with a wildcard does not match `$` topics ([MQTT-4.7.2-1]) then holds in NATS
//! too, since such a filter only ever maps under `.m`. A filter's `+` becomes `*` and its
//! `#` becomes `>`; `a/#` also matches `a` in MQTT, which `a.>` does not in NATS, so such a
//! filter maps to two subjects (`a` and `a.>`).
//!
//! Levels are escaped so that any topic round-trips and no level can be read as a
//! wildcard or a separator: `.`, `*`, `>`, `%`, whitespace and control characters become
//! `%XX` per UTF-8 byte (uppercase hex), and an empty level (NATS has no empty tokens)
//! becomes the lone token `%`. Everything else, including non-ASCII text, stays as it is.

use std::fmt::Write as _;

/// Root token of ordinary topics.
const ROOT: &str = "m";
/// Root token of topics whose first level starts with `$`.
const DOLLAR_ROOT: &str = "s";

/// Why a prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error(
        "subject prefix {0:?} is not one or more NATS tokens (no spaces, wildcards or empty tokens)"
    )]
    Invalid(String),
}

/// The mapping for one cluster (its subject prefix).
#[derive(Debug, Clone)]
pub struct SubjectMap {
    prefix: String,
}

impl SubjectMap {
    /// A mapping under `prefix` (`sb`, or `prod.sb`).
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        let ok = !prefix.is_empty()
            && prefix.split('.').all(|t| {
                !t.is_empty()
                    && t != "*"
                    && t != ">"
                    && !t.chars().any(|c| c.is_whitespace() || c.is_control())
            });
        if !ok {
            return Err(PrefixError::Invalid(prefix.to_owned()));
        }
        Ok(SubjectMap {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The subject a message on `topic` (a valid topic name) is published on.
    pub fn topic_subject(&self, topic: &str) -> String {
        let root = if topic.starts_with('$') {
            DOLLAR_ROOT
        } else {
            ROOT
        };
        let mut s = String::with_capacity(self.prefix.len() + topic.len() + 8);
        s.push_str(&self.prefix);
        s.push('.');
        s.push_str(root);
        for level in topic.split('/') {
            s.push('.');
            escape_level(level, &mut s);
        }
        s
    }

    /// The topic of a subject made by [`SubjectMap::topic_subject`]; `None` for any other
    /// subject.
    pub fn subject_topic(&self, subject: &str) -> Option<String> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let (root, rest) = rest.split_once('.')?;
        if root != ROOT && root != DOLLAR_ROOT {
            return None;
        }
        let mut topic = Vec::with_capacity(rest.len());
        for (i, token) in rest.split('.').enumerate() {
            if i > 0 {
                topic.push(b'/');
            }
            unescape_token(token, &mut topic)?;
        }
        let topic = String::from_utf8(topic).ok()?;
        // The root must be the one the topic maps to, or two subjects would name one topic.
        let dollar = topic.starts_with('$');
        (dollar == (root == DOLLAR_ROOT)).then_some(topic)
    }

    /// The subjects (one, or two for a filter ending in `#` after at least one level) whose
    /// union matches exactly the topics `filter` (a valid filter, without `$share/...`)
    /// matches.
    pub fn filter_subjects(&self, filter: &str) -> Vec<String> {
        let first = filter.split('/').next().unwrap_or_default();
        let root = if first.starts_with('$') {
            DOLLAR_ROOT
        } else {
            ROOT
        };
        let mut s = String::with_capacity(self.prefix.len() + filter.len() + 8);
        s.push_str(&self.prefix);
        s.push('.');
        s.push_str(root);
        let mut parent = None;
        for level in filter.split('/') {
            match level {
                "#" => {
                    // `a/#` matches `a` too; a lone `#` has no parent level (topics are
                    // never empty).
                    if s.len() > self.prefix.len() + 1 + root.len() {
                        parent = Some(s.clone());
                    }
                    s.push_str(".>");
                }
                "+" => s.push_str(".*"),
                _ => {
                    s.push('.');
                    escape_level(level, &mut s);
                }
            }
        }
        let mut out = Vec::with_capacity(2);
        out.extend(parent);
        out.push(s);
        out
    }

    /// A subject of the cluster's own (not a topic): `{prefix}.{name}`, `name` made of
    /// tokens the caller escaped.
    pub fn internal(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
}

/// Appends `level`, escaped, as one NATS token.
pub fn escape_level(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('%');
        return;
    }
    for c in level.chars() {
        if matches!(c, '.' | '*' | '>' | '%') || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// Appends the bytes of the level `token` stands for; `None` if it is not an escaped level.
fn unescape_token(token: &str, out: &mut Vec<u8>) -> Option<()> {
    if token == "%" {
        return Some(());
    }
    if token.is_empty() || token == "*" || token == ">" {
        return None;
    }
    let bytes = token.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests;
