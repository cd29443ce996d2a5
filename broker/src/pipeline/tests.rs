//! Pipeline stage tests on a broker without listeners and with the in-memory store.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_proto::{Properties, Publish, QoS, ReasonCode, SubscriptionOptions, Version};

use super::ack::AckWait;
use super::intercept::{Intercepted, Interceptor, Origin};
use super::{Outcome, Publisher};
use crate::auth::{Acl, Action, Identity};
use crate::message::Message;
use crate::namespace::Namespace;
use crate::store::memory::MemoryStore;
use crate::{Broker, BrokerConfig, BrokerHandle, BrokerState, Listeners};

/// Records what it was given and answers with a fixed code.
struct Recorder {
    seen: Mutex<Vec<(String, Option<String>, Bytes)>>,
    answer: ReasonCode,
}

impl Interceptor for Recorder {
    fn publish(&self, _b: &Arc<BrokerState>, origin: &Origin<'_>, msg: Message) -> Intercepted {
        self.seen
            .lock()
            .push((msg.topic, origin.identity.username.clone(), msg.payload));
        Intercepted::now(self.answer)
    }
}

/// Denies publishing to `secret/...`.
struct DenySecret;

impl Acl for DenySecret {
    fn allowed(&self, _who: &Identity, action: Action, topic: &str) -> bool {
        !(action == Action::Publish && (topic.starts_with("secret/") || topic.starts_with('$')))
    }
}

struct Fixture {
    handle: BrokerHandle,
    store: Arc<MemoryStore>,
    svc: Arc<Recorder>,
    deny: Arc<Recorder>,
    /// Sessions opened by the test, held open for its life.
    held: Mutex<Vec<crate::sessions::Opened>>,
}

impl Fixture {
    async fn new() -> Fixture {
        let store = Arc::new(MemoryStore::new());
        let svc = Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            answer: ReasonCode::Success,
        });
        let deny = Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            answer: ReasonCode::NotAuthorized,
        });
        let config = BrokerConfig {
            listeners: Listeners {
                tcp: Vec::new(),
                ..Listeners::default()
            },
            sys_interval: 0,
            ..BrokerConfig::default()
        };
        let handle = Broker::new(config)
            .with_store(store.clone())
            .with_acl(Arc::new(DenySecret))
            .with_interceptor("svc/", svc.clone())
            .with_interceptor("closed/", deny.clone())
            .start()
            .await
            .expect("start without listeners");
        Fixture {
            handle,
            store,
            svc,
            deny,
            held: Mutex::new(Vec::new()),
        }
    }

    fn state(&self) -> &Arc<BrokerState> {
        self.handle.state()
    }

    /// Opens a session with one subscription; returns its uid.
    async fn subscriber(&self, client_id: &str, filter: &str, expiry: u32) -> u64 {
        let b = self.state();
        let opened = b.open_session(client_id, true, expiry, b.next_id()).await;
        let uid = opened.state.uid;
        let opts = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..SubscriptionOptions::default()
        };
        b.routes.insert(uid, filter, opts, None).expect("filter");
        self.held.lock().push(opened);
        uid
    }

    fn publish(&self, identity: &Identity, version: Version, topic: &str, qos: QoS) -> Outcome {
        let from = Publisher {
            identity,
            namespace: &identity.namespace,
            client_id: "pub",
            session_uid: 999_999,
            version,
            persistent: false,
        };
        self.state().handle_publish(
            &from,
            Publish {
                dup: false,
                qos,
                retain: false,
                topic: topic.into(),
                pkid: 1,
                properties: Properties::default(),
                payload: Bytes::from_static(b"hi"),
            },
        )
    }
}

fn user(name: &str) -> Identity {
    Identity {
        username: Some(name.into()),
        ..Identity::default()
    }
}

async fn committed(outcome: Outcome) -> ReasonCode {
    match outcome {
        Outcome::Ack {
            code,
            wait: Some(AckWait::Store(rx)),
        } => match rx.await {
            Ok(Ok(_)) => code,
            _ => ReasonCode::UnspecifiedError,
        },
        Outcome::Ack {
            wait: Some(AckWait::Code(rx)),
            ..
        } => rx.await.unwrap_or(ReasonCode::UnspecifiedError),
        Outcome::Ack { code, wait: None } => code,
        other => panic!("expected an acknowledgement, got {other:?}"),
    }
}

#[tokio::test]
async fn routed_message_is_stored_for_a_persistent_subscriber_before_the_ack() {
    let f = Fixture::new().await;
    let uid = f.subscriber("sub", "a/+", 3600).await;
    let out = f.publish(&user("u"), Version::V5, "a/b", QoS::AtLeastOnce);
    assert!(
        matches!(
            &out,
            Outcome::Ack {
                wait: Some(AckWait::Store(_)),
                ..
            }
        ),
        "the ack waits for the commit: {out:?}"
    );
    assert_eq!(committed(out).await, ReasonCode::Success);
    assert_eq!(f.store.queue_len(uid), 1);
    let mailbox = f.state().sessions.mailbox(uid).expect("mailbox");
    assert_eq!(mailbox.len(), 1);
    // No subscriber: v5 is told.
    let none = f.publish(&user("u"), Version::V5, "x", QoS::AtLeastOnce);
    assert_eq!(committed(none).await, ReasonCode::NoMatchingSubscribers);
}

#[tokio::test]
async fn interceptor_takes_over_its_topics_and_nothing_is_routed() {
    let f = Fixture::new().await;
    let uid = f.subscriber("snoop", "#", 0).await;
    let out = f.publish(&user("alice"), Version::V5, "svc/do", QoS::AtLeastOnce);
    assert_eq!(committed(out).await, ReasonCode::Success);
    let seen = f.svc.seen.lock().clone();
    assert_eq!(
        seen,
        [(
            "svc/do".to_string(),
            Some("alice".to_string()),
            Bytes::from_static(b"hi")
        )]
    );
    let mailbox = f.state().sessions.mailbox(uid).expect("mailbox");
    assert!(mailbox.is_empty(), "an intercepted message is not routed");
}

#[tokio::test]
async fn rejecting_interceptor_answers_v5_and_acks_v3() {
    let f = Fixture::new().await;
    let v5 = f.publish(&user("u"), Version::V5, "closed/x", QoS::AtLeastOnce);
    assert_eq!(committed(v5).await, ReasonCode::NotAuthorized);
    let v3 = f.publish(&user("u"), Version::V3_1_1, "closed/x", QoS::AtLeastOnce);
    assert_eq!(committed(v3).await, ReasonCode::Success);
    assert_eq!(f.deny.seen.lock().len(), 2);
}

#[tokio::test]
async fn acl_denial_and_topic_limits() {
    let f = Fixture::new().await;
    let uid = f.subscriber("s", "secret/#", 0).await;
    let v5 = f.publish(&user("u"), Version::V5, "secret/x", QoS::AtLeastOnce);
    assert_eq!(committed(v5).await, ReasonCode::NotAuthorized);
    // 3.1.1 cannot be told: acknowledged and dropped.
    let v3 = f.publish(&user("u"), Version::V3_1_1, "secret/x", QoS::AtLeastOnce);
    assert_eq!(committed(v3).await, ReasonCode::Success);
    assert!(f.state().sessions.mailbox(uid).expect("mb").is_empty());
    let deep = "a/".repeat(40) + "z";
    let v5 = f.publish(&user("u"), Version::V5, &deep, QoS::AtLeastOnce);
    assert_eq!(committed(v5).await, ReasonCode::TopicNameInvalid);
    let v3 = f.publish(&user("u"), Version::V3_1_1, &deep, QoS::AtLeastOnce);
    assert!(matches!(v3, Outcome::Close(_)));
}

#[tokio::test]
async fn failing_store_refuses_qos1_without_a_false_ack() {
    let f = Fixture::new().await;
    f.subscriber("s", "t", 3600).await;
    f.store.set_failing(true);
    let v5 = f.publish(&user("u"), Version::V5, "t", QoS::AtLeastOnce);
    assert_eq!(committed(v5).await, ReasonCode::UnspecifiedError);
    let v3 = f.publish(&user("u"), Version::V3_1_1, "t", QoS::AtLeastOnce);
    assert!(matches!(v3, Outcome::Close(_)), "3.1.1 must not be acked");
    // QoS 0 keeps flowing.
    assert!(matches!(
        f.publish(&user("u"), Version::V5, "t", QoS::AtMostOnce),
        Outcome::Done
    ));
}

#[tokio::test]
async fn tenant_publisher_reaches_only_its_tenant() {
    let f = Fixture::new().await;
    let same = f.subscriber("t7-sub", "$t/7/sensors/#", 0).await;
    let other = f.subscriber("t8-sub", "$t/8/sensors/#", 0).await;
    let plain = f.subscriber("default-sub", "sensors/#", 0).await;
    let device = Identity {
        username: Some("dev".into()),
        namespace: Namespace::tenant(7, None),
        ..Identity::default()
    };
    let out = f.publish(&device, Version::V5, "sensors/1", QoS::AtLeastOnce);
    assert_eq!(committed(out).await, ReasonCode::Success);
    let len = |uid| f.state().sessions.mailbox(uid).expect("mb").len();
    assert_eq!((len(same), len(other), len(plain)), (1, 0, 0));
    // A device cannot name another tenant's topics.
    let out = f.publish(&device, Version::V5, "$t/8/sensors/1", QoS::AtLeastOnce);
    assert_eq!(committed(out).await, ReasonCode::NotAuthorized);
}
