//! The intercept stage: services that take over the messages of their topics.
//!
//! An [`Interceptor`] registers a prefix of the internal topic space (the IM service owns
//! `$im/req/`). A publish to such a topic is not routed: the interceptor gets it with the
//! publisher's identity, does its work (the IM service assigns a seq, persists, fans out,
//! answers) and says how to acknowledge it, possibly after a store commit.

use std::sync::Arc;

use switchboard_proto::{ReasonCode, Version};

use super::ack::AckWait;
use crate::BrokerState;
use crate::auth::Identity;
use crate::message::Message;
use crate::namespace::Namespace;

/// Who published an intercepted message.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub identity: &'a Identity,
    pub namespace: &'a Namespace,
    pub client_id: &'a str,
    pub version: Version,
}

/// How to acknowledge an intercepted message.
#[derive(Debug)]
pub struct Intercepted {
    /// PUBACK/PUBREC reason code (unless `wait` decides another).
    pub code: ReasonCode,
    /// When set, the acknowledgement waits for it: a store commit (0x80 if it fails) or
    /// the service's own verdict once its work is done.
    pub wait: Option<AckWait>,
}

impl Intercepted {
    /// Acknowledge at once with `code`.
    pub fn now(code: ReasonCode) -> Intercepted {
        Intercepted { code, wait: None }
    }

    /// Acknowledge with the code sent on `rx` (0x80 if the sender is dropped).
    pub fn later(rx: tokio::sync::oneshot::Receiver<ReasonCode>) -> Intercepted {
        Intercepted {
            code: ReasonCode::Success,
            wait: Some(AckWait::Code(rx)),
        }
    }
}

/// A service that owns a topic prefix.
pub trait Interceptor: Send + Sync + 'static {
    /// Handles one message published to a topic under its prefix. Must not block: long
    /// work is spawned, and `durable` delays the acknowledgement until it is done.
    fn publish(&self, broker: &Arc<BrokerState>, origin: &Origin<'_>, msg: Message) -> Intercepted;
}

/// The registered interceptors, by prefix.
#[derive(Default)]
pub struct Interceptors {
    list: Vec<(String, Arc<dyn Interceptor>)>,
}

impl std::fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|(p, _)| p))
            .finish()
    }
}

impl Interceptors {
    /// Registers `i` for topics starting with `prefix`.
    pub fn register(&mut self, prefix: &str, i: Arc<dyn Interceptor>) {
        self.list.push((prefix.to_owned(), i));
    }

    /// The interceptor owning `topic`, if any.
    pub fn find(&self, topic: &str) -> Option<&Arc<dyn Interceptor>> {
        self.list
            .iter()
            .find(|(p, _)| topic.starts_with(p.as_str()))
            .map(|(_, i)| i)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
