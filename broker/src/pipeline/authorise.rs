//! The authorise stage: may this publisher publish to this topic, and under which internal
//! name?
//!
//! Checks, in order: the configured topic limits, the publisher's namespace (tenant
//! isolation, see [`crate::namespace`]) and the ACL (asked with the topic as the client
//! named it, so rules read like the client's topics). Topics an interceptor took over (IM
//! requests `$im/req/...`, service requests `$im/admin/...`) are the service's to judge and
//! skip the ACL.

use std::borrow::Cow;

use switchboard_proto::ReasonCode;
use switchboard_proto::session::Violation;

use super::Publisher;
use crate::BrokerState;
use crate::auth::Action;
use crate::config::Limits;

/// Why a publish is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("topic exceeds the topic limits")]
    TopicLimits,
    #[error("not authorized to publish to this topic")]
    NotAuthorized,
    #[error("storage is failing")]
    StorageFailing,
    #[error("quota exceeded (disk budget or write backlog)")]
    Quota,
}

impl Refusal {
    /// The MQTT 5 reason code.
    pub fn code(self) -> ReasonCode {
        match self {
            Refusal::TopicLimits => ReasonCode::TopicNameInvalid,
            Refusal::NotAuthorized => ReasonCode::NotAuthorized,
            Refusal::StorageFailing => ReasonCode::UnspecifiedError,
            Refusal::Quota => ReasonCode::QuotaExceeded,
        }
    }

    /// The DISCONNECT for a client that cannot be told by an acknowledgement.
    pub fn violation(self) -> Violation {
        Violation {
            code: self.code(),
            reason: match self {
                Refusal::TopicLimits => "topic exceeds the topic limits",
                Refusal::NotAuthorized => "not authorized",
                Refusal::StorageFailing => "storage is failing",
                Refusal::Quota => "quota exceeded",
            },
        }
    }
}

/// The internal topic `topic` is published under, or why it may not be.
pub fn check<'a>(
    b: &BrokerState,
    from: &Publisher<'_>,
    topic: &'a str,
) -> Result<Cow<'a, str>, Refusal> {
    if !within_limits(topic, &b.config.limits) {
        return Err(Refusal::TopicLimits);
    }
    let internal = from
        .namespace
        .publish_topic(topic)
        .map_err(|_| Refusal::NotAuthorized)?;
    // A topic a service took over is that service's to authorise.
    if b.interceptors.find(&internal).is_some() {
        return Ok(internal);
    }
    if !b.acl.allowed(from.identity, Action::Publish, topic) {
        return Err(Refusal::NotAuthorized);
    }
    Ok(internal)
}

/// Checks the configured topic length and depth limits.
pub fn within_limits(t: &str, l: &Limits) -> bool {
    t.len() <= l.max_topic_length && t.split('/').count() <= l.max_topic_levels
}
