//! ACL files in mosquitto's format, plus `share` rules for shared-subscription groups,
//! reloadable while the broker runs.
//!
//! ```text
//! # Before any `user` line: rules for clients without a user name.
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret/#
//! # For every client; %u is the user name, %c the client id.
//! pattern write devices/%c/state
//! # Shared-subscription groups (global, like patterns): without share rules every group
//! # is open; a matching `deny` wins; once any `allow` exists, a group must match one.
//! share deny admin-*
//! share allow %u-*
//! ```
//!
//! Semantics (the ones mosquitto documents, made precise for wildcards):
//! - With an ACL file, what no rule grants is denied; a matching `deny` always wins.
//! - A client's rules are those of its user section (the anonymous section if it has no
//!   user name) plus every `pattern`.
//! - PUBLISH to topic T needs a `write`/`readwrite` rule matching T and no `deny` rule
//!   matching T.
//! - SUBSCRIBE to filter F needs a `read`/`readwrite` rule that covers F (matches every
//!   topic F can match: `a/#` covers `a/+/c`, `a/+` does not cover `a/#`) and no `deny`
//!   rule that matches any topic F can match (with `deny secret/#`, `#` is refused).
//!   `$share/{group}/{F}` is checked as F, and the group against the `share` rules.
//! - A pattern whose `%u` or `%c` would be filled with a value containing `+`, `#`, `/` or
//!   `*` grants nothing, and a `deny` pattern in that case denies everything it could
//!   match: a client cannot widen its rights through its name. Without a user name, `%u`
//!   rules do not apply.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use switchboard_proto::topic;

use super::topic_rules::{covers, overlaps};
use super::{Acl, Action, Identity, split_share};

/// Errors loading an ACL file; the display form says `file:line: what`.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("cannot read ACL file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: String,
        line: usize,
        reason: String,
    },
}

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn grants(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Access::ReadWrite, _)
                | (Access::Read, Action::Subscribe)
                | (Access::Write, Action::Publish)
        )
    }
}

#[derive(Debug, Clone)]
struct Rule {
    access: Access,
    topic: String,
}

#[derive(Debug, Clone)]
struct ShareRule {
    allow: bool,
    group: String,
}

/// The parsed rules of one ACL file.
#[derive(Debug, Default)]
pub struct AclRules {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
    shares: Vec<ShareRule>,
    count: usize,
}

impl AclRules {
    /// Parses the text of an ACL file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<AclRules, AclError> {
        let mut rules = AclRules::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| AclError::Syntax {
                path: origin.to_owned(),
                line: i + 1,
                reason,
            };
            let (keyword, rest) = line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(k, r)| (k, r.trim()));
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("`user` needs a user name".into()));
                    }
                    user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(err)?;
                    if keyword == "pattern" {
                        rules.patterns.push(rule);
                    } else if let Some(u) = &user {
                        rules.users.entry(u.clone()).or_default().push(rule);
                    } else {
                        rules.anonymous.push(rule);
                    }
                }
                "share" => {
                    let (mode, group) = rest
                        .split_once(char::is_whitespace)
                        .map(|(m, g)| (m, g.trim()))
                        .ok_or_else(|| err("expected `share allow|deny GROUP`".into()))?;
                    let allow = match mode {
                        "allow" => true,
                        "deny" => false,
                        other => {
                            return Err(err(format!(
                                "`share` takes `allow` or `deny`, not `{other}`"
                            )));
                        }
                    };
                    if group.is_empty() || group.contains(['/', '+', '#']) {
                        return Err(err(format!("invalid share group pattern `{group}`")));
                    }
                    rules.shares.push(ShareRule {
                        allow,
                        group: group.to_owned(),
                    });
                }
                other => return Err(err(format!("unknown keyword `{other}`"))),
            }
            rules.count += usize::from(keyword != "user");
        }
        Ok(rules)
    }

    /// Number of `topic`, `pattern` and `share` rules.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The decision for one publish or subscribe.
    pub fn allowed(&self, who: &Identity, action: Action, topic: &str) -> bool {
        let target = match action {
            Action::Publish => topic,
            Action::Subscribe => {
                let (group, filter) = split_share(topic);
                if let Some(g) = group
                    && !self.share_allowed(who, g)
                {
                    return false;
                }
                filter
            }
        };
        let own = match &who.username {
            Some(u) => self.users.get(u).map_or(&[][..], Vec::as_slice),
            None => &self.anonymous,
        };
        let mut granted = false;
        for rule in own {
            match check(rule.access, &rule.topic, action, target) {
                Verdict::Deny => return false,
                Verdict::Grant => granted = true,
                Verdict::Nothing => {}
            }
        }
        for rule in &self.patterns {
            let verdict = match substitute(&rule.topic, who) {
                Filled::Ok(t) => check(rule.access, &t, action, target),
                Filled::NotApplicable => Verdict::Nothing,
                // Fail closed: an unsafe name never grants and a deny denies outright.
                Filled::Unsafe if rule.access == Access::Deny => Verdict::Deny,
                Filled::Unsafe => Verdict::Nothing,
            };
            match verdict {
                Verdict::Deny => return false,
                Verdict::Grant => granted = true,
                Verdict::Nothing => {}
            }
        }
        granted
    }

    fn share_allowed(&self, who: &Identity, group: &str) -> bool {
        let mut any_allow = false;
        let mut allowed = false;
        for rule in &self.shares {
            any_allow |= rule.allow;
            let hit = match substitute(&rule.group, who) {
                Filled::Ok(p) => glob(&p, group),
                Filled::NotApplicable => false,
                Filled::Unsafe => !rule.allow,
            };
            if hit && !rule.allow {
                return false;
            }
            allowed |= hit && rule.allow;
        }
        allowed || !any_allow
    }
}

/// An ACL file, re-read by [`FileAcl::reload`]; a failed reload keeps the rules in force.
#[derive(Debug)]
pub struct FileAcl {
    path: PathBuf,
    rules: RwLock<Arc<AclRules>>,
}

impl FileAcl {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<FileAcl, AclError> {
        Ok(FileAcl {
            rules: RwLock::new(Arc::new(read(path)?)),
            path: path.to_owned(),
        })
    }

    /// Re-reads the file; on success the new rules apply to every later check and the rule
    /// count is returned; on error the old rules stay.
    pub fn reload(&self) -> Result<usize, AclError> {
        match read(&self.path) {
            Ok(rules) => {
                let n = rules.len();
                *self.rules.write() = Arc::new(rules);
                tracing::info!(path = %self.path.display(), rules = n, "ACL file reloaded");
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(error = %e, "ACL reload failed; the previous rules stay");
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rules in force.
    pub fn len(&self) -> usize {
        self.rules.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Acl for FileAcl {
    fn allowed(&self, who: &Identity, action: Action, topic: &str) -> bool {
        // The file's `user` sections and patterns name default-tenant clients; tenants'
        // clients live in their own namespace, checked by it and by the IM service.
        if !matches!(who.namespace, crate::namespace::Namespace::Default) {
            return true;
        }
        let rules = self.rules.read().clone();
        rules.allowed(who, action, topic)
    }
}

fn read(path: &Path) -> Result<AclRules, AclError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AclError::Io {
        path: name.clone(),
        source,
    })?;
    AclRules::parse(&text, &name)
}

/// `[read|write|readwrite|deny] TOPIC`; without an access word the rule is `readwrite`.
fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (first, tail) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(a, b)| (a, b.trim()));
    let (access, topic) = match first {
        "read" => (Access::Read, tail),
        "write" => (Access::Write, tail),
        "readwrite" => (Access::ReadWrite, tail),
        "deny" => (Access::Deny, tail),
        _ => (Access::ReadWrite, rest),
    };
    if topic.is_empty() {
        return Err("missing topic".into());
    }
    if topic.starts_with("$share/") {
        return Err("rules name topics; shared groups are checked with `share` rules".into());
    }
    topic::validate_filter(topic).map_err(|why| format!("invalid topic `{topic}`: {why}"))?;
    Ok(Rule {
        access,
        topic: topic.to_owned(),
    })
}

enum Verdict {
    Grant,
    Deny,
    Nothing,
}

fn check(access: Access, rule: &str, action: Action, target: &str) -> Verdict {
    if access == Access::Deny {
        // A publish topic has no wildcards: overlapping is matching.
        if overlaps(rule, target) {
            return Verdict::Deny;
        }
        return Verdict::Nothing;
    }
    if access.grants(action) && covers(rule, target) {
        Verdict::Grant
    } else {
        Verdict::Nothing
    }
}

enum Filled {
    Ok(String),
    NotApplicable,
    Unsafe,
}

/// Fills `%u` and `%c` in a pattern.
fn substitute(pattern: &str, who: &Identity) -> Filled {
    if !pattern.contains('%') {
        return Filled::Ok(pattern.to_owned());
    }
    let unsafe_value = |v: &str| v.contains(['+', '#', '/', '*']);
    let mut out = pattern.to_owned();
    if out.contains("%u") {
        let Some(u) = &who.username else {
            return Filled::NotApplicable;
        };
        if unsafe_value(u) {
            return Filled::Unsafe;
        }
        out = out.replace("%u", u);
    }
    if out.contains("%c") {
        if who.client_id.is_empty() {
            return Filled::NotApplicable;
        }
        if unsafe_value(&who.client_id) {
            return Filled::Unsafe;
        }
        out = out.replace("%c", &who.client_id);
    }
    Filled::Ok(out)
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: Option<&str>, client: &str) -> Identity {
        Identity {
            username: user.map(Into::into),
            client_id: client.into(),
            ..Default::default()
        }
    }

    const FILE: &str = "\
# anonymous
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret/#
topic write shared/in
user bob
topic read shared/#
pattern readwrite devices/%c/#
pattern read users/%u/inbox
share deny admin*
";

    #[test]
    fn users_anonymous_and_patterns() {
        let r = AclRules::parse(FILE, "acl").expect("parses");
        let (alice, bob, anon) = (
            who(Some("alice"), "a1"),
            who(Some("bob"), "b1"),
            who(None, "x"),
        );
        use Action::*;
        assert!(r.allowed(&anon, Subscribe, "public/news"));
        assert!(!r.allowed(&anon, Publish, "public/news"));
        assert!(!r.allowed(&alice, Subscribe, "public/news"), "not alice's");
        assert!(r.allowed(&alice, Publish, "alice/x"));
        assert!(!r.allowed(&alice, Publish, "alice/secret/x"));
        assert!(
            !r.allowed(&alice, Subscribe, "alice/#"),
            "overlaps the deny"
        );
        assert!(r.allowed(&alice, Subscribe, "alice/public/+"));
        assert!(
            !r.allowed(&alice, Subscribe, "alice/+"),
            "alice/+ matches alice/secret"
        );
        assert!(r.allowed(&bob, Subscribe, "shared/+/x"));
        assert!(!r.allowed(&bob, Subscribe, "#"));
        assert!(r.allowed(&bob, Publish, "devices/b1/state"));
        assert!(!r.allowed(&bob, Publish, "devices/a1/state"));
        assert!(r.allowed(&bob, Subscribe, "users/bob/inbox"));
        assert!(!r.allowed(&bob, Subscribe, "users/alice/inbox"));
        assert!(!r.allowed(&anon, Subscribe, "users/%u/inbox"));
        assert!(!r.allowed(&who(Some("carol"), "c"), Publish, "x"));
    }

    #[test]
    fn unsafe_names_gain_nothing_from_patterns() {
        let r = AclRules::parse(
            "pattern readwrite users/%u/#\npattern deny forbidden/%c",
            "acl",
        )
        .expect("parses");
        assert!(!r.allowed(&who(Some("+"), "c"), Action::Subscribe, "users/+/#"));
        assert!(!r.allowed(&who(Some("a/b"), "c"), Action::Publish, "users/a/b/x"));
        assert!(r.allowed(&who(Some("a"), "c"), Action::Publish, "users/a/x"));
        assert!(!r.allowed(&who(Some("a"), "c/#"), Action::Publish, "users/a/x"));
    }

    #[test]
    fn shared_groups() {
        let r = AclRules::parse(FILE, "acl").expect("parses");
        let bob = who(Some("bob"), "b1");
        assert!(r.allowed(&bob, Action::Subscribe, "$share/workers/shared/x"));
        assert!(!r.allowed(&bob, Action::Subscribe, "$share/admins/shared/x"));
        assert!(!r.allowed(&bob, Action::Subscribe, "$share/workers/other"));
        let only = AclRules::parse("topic read #\nshare allow team-%u", "acl").expect("ok");
        assert!(only.allowed(&who(None, "c"), Action::Subscribe, "a"));
        assert!(!only.allowed(&who(None, "c"), Action::Subscribe, "$share/team-/a"));
        let open = AclRules::parse("topic read #", "acl").expect("ok");
        assert!(open.allowed(&who(None, "c"), Action::Subscribe, "$share/any/a"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (text, line) in [
            ("topic read a\nfrobnicate x", 2),
            ("\n\ntopic read a/#/b", 3),
            ("user", 1),
            ("topic read", 1),
            ("share maybe g", 1),
            ("topic $share/g/a", 1),
        ] {
            match AclRules::parse(text, "f.acl") {
                Err(AclError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let e = AclRules::parse("bad", "f.acl").expect_err("bad");
        assert!(e.to_string().starts_with("f.acl:1: "), "{e}");
    }

    #[test]
    fn glob_matches_stars() {
        assert!(glob("a*", "abc"));
        assert!(glob("*c", "abc"));
        assert!(glob("a*c*", "abxcd"));
        assert!(!glob("a*d", "abc"));
        assert!(glob("*", ""));
        assert!(!glob("abc", "ab"));
    }
}
