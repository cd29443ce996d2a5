//! Topic namespaces: how a client's topics map onto the broker's internal topic space.
//!
//! Tenant isolation comes from the credentials, never from what a client claims: the
//! authenticator gives each connection a [`Namespace`], and every topic the client names
//! (publish topic, subscription filter, will topic) is mapped through it on the way in,
//! and every topic delivered to it is mapped back on the way out. A client of tenant 7
//! publishing `sensors/1` publishes `$t/7/sensors/1` inside the broker and never sees the
//! prefix; its `#` subscription is `$t/7/#` and cannot reach another tenant.
//!
//! Internal topic space:
//! - `$t/{tenant}/...`: plain MQTT topics of a tenant (devices, app topics).
//! - `$im/t/{tenant}/u/{uid}`: the event stream of one IM user (every device of the user
//!   subscribes to it as `$im/inbox`).
//! - `$im/t/{tenant}/d/{uid}/{client}/...`: responses to one IM device of user `uid` (seen
//!   as `$im/resp/...`).
//! - `$im/req/{op}`: IM requests, taken over by the IM service's interceptor.
//! - everything else: the default tenant (password-file and anonymous clients), unmapped,
//!   so today's MQTT behaviour is unchanged; it may not name `$t/` or `$im/` topics.

use std::borrow::Cow;

/// Prefix of every IM topic.
pub const IM_PREFIX: &str = "$im/";
/// Prefix of IM requests (the IM service's interceptor owns it).
pub const IM_REQUEST_PREFIX: &str = "$im/req/";
/// Prefix of the IM service's administrative requests (service identities only).
pub const IM_ADMIN_PREFIX: &str = "$im/admin/";
/// Prefix of tenants' plain topics.
pub const TENANT_PREFIX: &str = "$t/";

/// Why a topic cannot be used in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NsError {
    #[error("topic outside the client's namespace")]
    Forbidden,
}

/// What an IM device may reach besides its tenant's plain topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImBinding {
    /// Internal topic of the user's event stream.
    pub inbox: String,
    /// Internal prefix of this device's responses (ends with `/`).
    pub responses: String,
}

/// A connection's topic mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Namespace {
    /// The default tenant: topics unmapped; `$t/` and `$im/` are off limits.
    #[default]
    Default,
    /// A tenant's device or app client: plain topics under `$t/{tenant}/`, and for an IM
    /// login, its user's inbox and its own responses.
    Tenant {
        /// `$t/{tenant}/`
        prefix: String,
        im: Option<ImBinding>,
    },
    /// A service (gateway, push worker): the whole internal topic space, unmapped.
    Service,
    /// A heartbeat probe of an IM device (see `im::auth`): a throwaway connection that may
    /// only stay idle and ping; every topic is out of reach.
    Probe,
}

impl Namespace {
    /// The namespace of a tenant's client; `im` is `(tenant, uid, client_id)` for an IM
    /// login.
    pub fn tenant(tenant: u64, im: Option<(u64, &str)>) -> Namespace {
        Namespace::Tenant {
            prefix: format!("{TENANT_PREFIX}{tenant}/"),
            im: im.map(|(uid, client)| ImBinding {
                inbox: inbox_topic(tenant, uid),
                responses: format!("{IM_PREFIX}t/{tenant}/d/{uid}/{client}/"),
            }),
        }
    }

    /// True when topics pass unchanged both ways (the default tenant and services).
    pub fn is_identity(&self) -> bool {
        matches!(self, Namespace::Default | Namespace::Service)
    }

    /// True for an IM login.
    pub fn is_im(&self) -> bool {
        matches!(self, Namespace::Tenant { im: Some(_), .. })
    }

    /// Maps a topic name the client publishes to.
    pub fn publish_topic<'a>(&self, topic: &'a str) -> Result<Cow<'a, str>, NsError> {
        match self {
            Namespace::Service => Ok(Cow::Borrowed(topic)),
            Namespace::Probe => Err(NsError::Forbidden),
            Namespace::Default => {
                if topic.starts_with(TENANT_PREFIX) || topic.starts_with(IM_PREFIX) {
                    Err(NsError::Forbidden)
                } else {
                    Ok(Cow::Borrowed(topic))
                }
            }
            Namespace::Tenant { prefix, im } => {
                if topic.starts_with(IM_REQUEST_PREFIX) && im.is_some() {
                    Ok(Cow::Borrowed(topic))
                } else if topic.starts_with('$') {
                    Err(NsError::Forbidden)
                } else {
                    Ok(Cow::Owned(format!("{prefix}{topic}")))
                }
            }
        }
    }

    /// Maps a subscription filter (which may be `$share/{group}/{filter}`).
    pub fn filter<'a>(&self, raw: &'a str) -> Result<Cow<'a, str>, NsError> {
        if let Some(rest) = raw.strip_prefix("$share/")
            && let Some((group, filter)) = rest.split_once('/')
        {
            return match self.plain_filter(filter)? {
                Cow::Borrowed(_) => Ok(Cow::Borrowed(raw)),
                Cow::Owned(f) => Ok(Cow::Owned(format!("$share/{group}/{f}"))),
            };
        }
        self.plain_filter(raw)
    }

    fn plain_filter<'a>(&self, filter: &'a str) -> Result<Cow<'a, str>, NsError> {
        match self {
            Namespace::Service => Ok(Cow::Borrowed(filter)),
            Namespace::Probe => Err(NsError::Forbidden),
            Namespace::Default => {
                if filter.starts_with(TENANT_PREFIX) || filter.starts_with(IM_PREFIX) {
                    Err(NsError::Forbidden)
                } else {
                    Ok(Cow::Borrowed(filter))
                }
            }
            Namespace::Tenant { prefix, im } => {
                if let Some(im) = im {
                    if filter == "$im/inbox" {
                        return Ok(Cow::Owned(im.inbox.clone()));
                    }
                    if let Some(rest) = filter.strip_prefix("$im/resp/") {
                        return Ok(Cow::Owned(format!("{}{rest}", im.responses)));
                    }
                }
                if filter.starts_with('$') {
                    Err(NsError::Forbidden)
                } else {
                    Ok(Cow::Owned(format!("{prefix}{filter}")))
                }
            }
        }
    }

    /// Maps an internal topic back to what the client sees.
    pub fn outbound<'a>(&self, topic: &'a str) -> Cow<'a, str> {
        let Namespace::Tenant { prefix, im } = self else {
            return Cow::Borrowed(topic);
        };
        if let Some(rest) = topic.strip_prefix(prefix.as_str()) {
            return Cow::Borrowed(rest);
        }
        if let Some(im) = im {
            if topic == im.inbox {
                return Cow::Borrowed("$im/inbox");
            }
            if let Some(rest) = topic.strip_prefix(im.responses.as_str()) {
                return Cow::Owned(format!("$im/resp/{rest}"));
            }
        }
        Cow::Borrowed(topic)
    }

    /// Maps a response topic an IM request names (MQTT 5 Response Topic) to the internal
    /// topic the answer is published on; `None` if it is not one of the device's own.
    pub fn response_topic(&self, requested: &str) -> Option<String> {
        match self {
            Namespace::Tenant { im: Some(im), .. } => requested
                .strip_prefix("$im/resp/")
                .filter(|rest| !rest.is_empty() && !rest.contains(['+', '#']))
                .map(|rest| format!("{}{rest}", im.responses)),
            Namespace::Service => Some(requested.to_owned()),
            _ => None,
        }
    }
}

/// The internal topic of IM user `uid`'s event stream in tenant `tenant`.
pub fn inbox_topic(tenant: u64, uid: u64) -> String {
    // Built once per delivery of every IM event: without the formatting machinery.
    let (mut t_buf, mut u_buf) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (t, u) = (t_buf.format(tenant), u_buf.format(uid));
    let mut topic = String::with_capacity(IM_PREFIX.len() + 5 + t.len() + u.len());
    topic.push_str(IM_PREFIX);
    topic.push_str("t/");
    topic.push_str(t);
    topic.push_str("/u/");
    topic.push_str(u);
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_topics_are_the_tenant_and_user_in_decimal() {
        assert_eq!(inbox_topic(7, 42), "$im/t/7/u/42");
        assert_eq!(inbox_topic(0, 0), "$im/t/0/u/0");
        assert_eq!(inbox_topic(u64::MAX, 1), format!("$im/t/{}/u/1", u64::MAX));
    }

    #[test]
    fn default_tenant_is_unmapped_but_cannot_reach_tenants() {
        let ns = Namespace::Default;
        assert_eq!(ns.publish_topic("a/b").as_deref(), Ok("a/b"));
        assert_eq!(ns.filter("#").as_deref(), Ok("#"));
        assert_eq!(ns.filter("$t/7/#"), Err(NsError::Forbidden));
        assert_eq!(ns.filter("$share/g/$im/t/1/u/2"), Err(NsError::Forbidden));
        assert_eq!(ns.publish_topic("$im/req/send"), Err(NsError::Forbidden));
        assert_eq!(ns.outbound("a/b"), "a/b");
    }

    #[test]
    fn tenant_topics_are_prefixed_both_ways() {
        let ns = Namespace::tenant(7, None);
        assert_eq!(
            ns.publish_topic("sensors/1").as_deref(),
            Ok("$t/7/sensors/1")
        );
        assert_eq!(ns.filter("#").as_deref(), Ok("$t/7/#"));
        assert_eq!(
            ns.filter("$share/g/jobs/+").as_deref(),
            Ok("$share/g/$t/7/jobs/+")
        );
        assert_eq!(ns.outbound("$t/7/sensors/1"), "sensors/1");
        // Another tenant's topics, `$SYS` and IM topics are out of reach.
        assert_eq!(ns.filter("$t/8/#"), Err(NsError::Forbidden));
        assert_eq!(ns.filter("$SYS/#"), Err(NsError::Forbidden));
        assert_eq!(ns.filter("$im/inbox"), Err(NsError::Forbidden));
        assert_eq!(ns.publish_topic("$im/req/send"), Err(NsError::Forbidden));
    }

    #[test]
    fn a_probe_reaches_no_topic_at_all() {
        let ns = Namespace::Probe;
        for t in [
            "a/b",
            "#",
            "$im/inbox",
            "$im/req/send",
            "$share/g/#",
            "$SYS/#",
        ] {
            assert_eq!(ns.filter(t), Err(NsError::Forbidden), "{t}");
            assert_eq!(ns.publish_topic(t), Err(NsError::Forbidden), "{t}");
        }
        assert_eq!(ns.response_topic("$im/resp/x"), None);
    }

    #[test]
    fn im_devices_see_their_inbox_and_responses_only() {
        let ns = Namespace::tenant(7, Some((42, "phone-1")));
        assert_eq!(ns.filter("$im/inbox").as_deref(), Ok("$im/t/7/u/42"));
        assert_eq!(
            ns.filter("$im/resp/#").as_deref(),
            Ok("$im/t/7/d/42/phone-1/#")
        );
        assert_eq!(ns.outbound("$im/t/7/u/42"), "$im/inbox");
        assert_eq!(ns.outbound("$im/t/7/d/42/phone-1/x"), "$im/resp/x");
        assert_eq!(
            ns.publish_topic("$im/req/send").as_deref(),
            Ok("$im/req/send")
        );
        assert_eq!(
            ns.response_topic("$im/resp/x").as_deref(),
            Some("$im/t/7/d/42/phone-1/x")
        );
        assert_eq!(ns.response_topic("$im/t/7/u/43"), None);
        assert_eq!(ns.response_topic("$im/resp/#"), None);
        assert_eq!(ns.filter("$im/t/7/u/43"), Err(NsError::Forbidden));
    }
}
