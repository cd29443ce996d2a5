//! Where jobs come from, with back-pressure. The worker holds its own MQTT connection to
//! the broker (`$service`, client id `{gateway}-push`), apart from the gateway's service
//! connection whose answers it needs while working, and subscribes to the shared
//! subscriptions [`PUSH_FILTER`] (jobs) and [`CTL_FILTER`] (operator requests such as
//! `switchboard ctl push-test`), so gateway instances split the load.
//!
//! Flow control: the worker takes the next job only when one of its
//! [`super::PushConfig::max_concurrent`] slots is free. Until then jobs wait in the
//! client's bounded event queue (1024); when that is full the client stops reading and
//! holds back the acknowledgements of what it has not handed over, so the broker's
//! in-flight window for this connection (Receive Maximum, 1024) fills and the broker
//! keeps the rest in the connection's queue (`limits.max_queued_messages`, 10,000 by
//! default, per gateway). Nothing is dropped in the gateway. Beyond the broker's queue
//! the broker refuses further jobs for this member (counted in its
//! `refused_queue_full` metric). A job taken is handled once per instance (recent job
//! ids): at-least-once delivery, idempotent handling.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use prost::Message as _;
use serde_json::{Value, json};
use switchboard_client::{Client, Config, Event};
use switchboard_proto::im::PushJob;
use switchboard_proto::{Properties, Publish, QoS};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::Worker;

/// The shared subscription gateways take push jobs through.
pub const PUSH_FILTER: &str = "$share/push/$im/push/#";
/// The shared subscription of operator requests to the push worker.
pub const CTL_FILTER: &str = "$share/push/$im/push-ctl/#";
/// `{tenant, user}` → a test push to each of the user's devices; answered on the request's
/// response topic, with its correlation data, `{devices: [...]}` or `{error: {code,
/// message}}` (the same answer as `POST /v1/push/test`).
pub const CTL_TEST_TOPIC: &str = "$im/push-ctl/test";
/// How long starting the worker waits for the broker to acknowledge its subscriptions.
pub const SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Worker {
    /// Connects the job connection with `mqtt` (the gateway's client settings) and the
    /// service secret, subscribes (waiting up to [`SUBSCRIBE_WAIT`] for the broker's
    /// acknowledgements, so a gateway that has started takes jobs), then handles jobs in
    /// the returned task until the connection's client stops.
    pub async fn start(self: Arc<Self>, mut mqtt: Config, secret: String) -> JoinHandle<()> {
        mqtt.client_id = format!("{}-push", mqtt.client_id);
        mqtt.username = Some("$service".into());
        mqtt.password = Some(Bytes::from(secret.into_bytes()));
        // Jobs left unacknowledged by a stopped worker go to the other members.
        mqtt.session_expiry = 0;
        let (client, events) = match Client::start(mqtt) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(target: "push", error = %e, "cannot start the job connection; no push will be sent");
                return tokio::spawn(async {});
            }
        };
        // The job filter last: once jobs flow, the client may wait for us to take them.
        let subscribed = tokio::time::timeout(SUBSCRIBE_WAIT, async {
            for filter in [CTL_FILTER, PUSH_FILTER] {
                match client.subscribe_acked(filter, QoS::AtLeastOnce).await {
                    Ok(codes) if codes.iter().all(|c| !c.is_error()) => {}
                    other => return Err(format!("{filter}: {other:?}")),
                }
            }
            Ok(())
        })
        .await;
        match subscribed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(target: "push", error = e, "the broker refused the job subscription; no push will be sent");
                return tokio::spawn(async {});
            }
            // Still pending: the client subscribes once it reaches the broker.
            Err(_) => {
                tracing::warn!(target: "push", "job subscription not acknowledged yet; the worker starts anyway")
            }
        }
        tokio::spawn(self.run(client, events))
    }

    async fn run(self: Arc<Self>, client: Client, mut events: mpsc::Receiver<Event>) {
        let slots = Arc::new(Semaphore::new(self.cfg.max_concurrent.max(1)));
        loop {
            // A job is taken only with a free slot: the rest wait, flow-controlled.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let Some(ev) = events.recv().await else {
                return;
            };
            match ev {
                Event::Message(p) => self.take(*p, permit, &client),
                Event::Connected { reconnects, .. } if reconnects > 0 => {
                    tracing::info!(target: "push", "job connection back");
                }
                Event::Disconnected { reason } => {
                    tracing::warn!(target: "push", reason, "job connection lost; reconnecting");
                }
                _ => {}
            }
        }
    }

    /// Starts handling one message (a job or an operator request) in its slot.
    fn take(self: &Arc<Self>, p: Publish, permit: OwnedSemaphorePermit, client: &Client) {
        if p.topic == CTL_TEST_TOPIC {
            let (w, client) = (self.clone(), client.clone());
            tokio::spawn(async move {
                let _permit = permit;
                w.answer_test(p, &client).await;
            });
            return;
        }
        let Some(job) = decode(&p) else {
            tracing::warn!(target: "push", topic = p.topic, "undecodable push job skipped");
            return;
        };
        if !self.recent.lock().insert(&job.job_id) {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "push", job = job.job_id, "duplicate job skipped");
            return;
        }
        self.stats.jobs.fetch_add(1, Ordering::Relaxed);
        let w = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            w.handle(job).await;
        });
    }

    /// Answers a `ctl push-test` request.
    async fn answer_test(&self, p: Publish, client: &Client) {
        let Some(reply_to) = p.properties.response_topic.clone() else {
            tracing::warn!(target: "push", "push-test request without a response topic ignored");
            return;
        };
        let req: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
        let (tenant, user) = (req["tenant"].as_u64(), req["user"].as_str());
        let answer = match (tenant, user) {
            (Some(t), Some(u)) if !u.is_empty() => match self.test_user(t, u).await {
                Ok(devices) => json!({ "devices": devices }),
                Err(e) => json!({"error": {"code": 502, "message": e}}),
            },
            _ => json!({"error": {"code": 400,
                "message": "tenant (a number) and user are required"}}),
        };
        let reply = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: reply_to,
            pkid: 0,
            properties: Properties {
                correlation_data: p.properties.correlation_data.clone(),
                ..Properties::default()
            },
            payload: Bytes::from(answer.to_string()),
        };
        if let Err(e) = client.publish_message(reply).await {
            tracing::warn!(target: "push", error = %e, "cannot answer a push-test request");
        }
    }
}

/// A job from `$im/push/{tenant}` (`PushJob`) or a broadcast's chunk of users from
/// `$im/push/{tenant}/broadcast` (`BroadcastPush`, made into a job for many users).
pub fn decode(p: &Publish) -> Option<PushJob> {
    if !p.topic.ends_with("/broadcast") {
        return PushJob::decode(p.payload.as_ref()).ok();
    }
    let b = switchboard_proto::im::BroadcastPush::decode(p.payload.as_ref()).ok()?;
    Some(PushJob {
        job_id: format!("{}:{}:{}:b{}", b.tenant, b.conversation, b.seq, b.chunk),
        tenant: b.tenant,
        title: b.title,
        body: b.body,
        collapse_key: b.conversation.clone(),
        conversation: b.conversation,
        seq: b.seq,
        users: b.users,
        ..PushJob::default()
    })
}

/// The recipients of a job.
pub fn recipients(job: &PushJob) -> Vec<String> {
    let mut users = Vec::new();
    if !job.user.is_empty() {
        users.push(job.user.clone());
    }
    for u in &job.users {
        if !u.is_empty() && !users.contains(u) {
            users.push(u.clone());
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_for_many_users_reaches_each_once() {
        let job = PushJob {
            users: vec!["a".into(), "b".into(), "a".into(), String::new()],
            ..Default::default()
        };
        assert_eq!(recipients(&job), vec!["a".to_owned(), "b".to_owned()]);
        let one = PushJob {
            user: "c".into(),
            ..Default::default()
        };
        assert_eq!(recipients(&one), vec!["c".to_owned()]);
    }

    #[test]
    fn broadcast_chunks_become_jobs_for_many_users() {
        let chunk = switchboard_proto::im::BroadcastPush {
            tenant: 7,
            conversation: "b:1".into(),
            seq: 3,
            users: vec!["a".into(), "b".into()],
            chunk: 2,
            ..Default::default()
        };
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "$im/push/7/broadcast".into(),
            pkid: 0,
            properties: Default::default(),
            payload: chunk.encode_to_vec().into(),
        };
        let job = decode(&p).expect("decodes");
        assert_eq!((job.tenant, job.job_id.as_str()), (7, "7:b:1:3:b2"));
        assert_eq!(recipients(&job), vec!["a".to_owned(), "b".to_owned()]);
    }
}
