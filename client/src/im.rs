//! The IM API of the SDK: log in with a token, send, sync, read, recall, and a stream of
//! events (messages, receipts, unread counts), over one [`Client`].
//!
//! Requests are MQTT 5 request/response: published to `$im/req/{op}` with Response Topic
//! `$im/resp/r` and a Correlation Data id; the answer arrives on `$im/resp/...` with the
//! same id. Events arrive on `$im/inbox`. See `docs/protocol.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::im;
use switchboard_proto::{Properties, Publish, QoS, ReasonCode, SubscriptionOptions};
use tokio::sync::mpsc;

use crate::im_gaps::Seen;
use crate::requests::{Correlator, NoAnswer};
use crate::{Client, Config, Error, Event};

/// Topic of the user's events.
pub const INBOX: &str = "$im/inbox";
/// Response topic requests name (the broker scopes it to this device).
const RESPONSES: &str = "$im/resp/r";
/// How long a request waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most messages one `sync_all` pulls before giving up on a runaway server.
const SYNC_ALL_MAX_PAGES: usize = 10_000;

/// What the app hears from an [`ImClient`].
#[derive(Debug, Clone)]
pub enum ImEvent {
    /// (Re)connected: time to sync.
    Connected {
        reconnects: u32,
    },
    Disconnected {
        reason: String,
    },
    /// A message, receipt, unread count... from the broker.
    Event(Box<im::Event>),
    /// Events were lost and `dropped` is how many (at least): the app did not read its
    /// events fast enough (the event channel holds 1,024), or a message arrived whose
    /// conversation skipped seqs this device never got (the inbox is taken at QoS 0, see
    /// `docs/protocol.md` section 5.3). Sync to catch up.
    Lagged {
        dropped: u64,
    },
}

/// Why an IM request failed.
#[derive(Debug, thiserror::Error)]
pub enum ImError {
    #[error(transparent)]
    Client(#[from] Error),
    /// The broker answered with an error status.
    #[error("IM error {code}: {message}")]
    Status { code: u32, message: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("undecodable answer: {0}")]
    Decode(String),
    #[error("the broker refused the subscription to {0}: {1}")]
    Subscribe(&'static str, ReasonCode),
}

/// An IM device: one MQTT connection logged in with a token.
#[derive(Clone)]
pub struct ImClient {
    client: Client,
    requests: Correlator,
    /// Set on reconnect: the new connection has not said what it understands yet (the
    /// next request says it first; until then events come in their plain form).
    features_due: Arc<AtomicBool>,
    /// The last seq seen per conversation, for gap detection.
    seen: Arc<Seen>,
    /// The app's event stream, for a gap found when a send ends (weak: the stream still
    /// ends when the connection's event task does).
    events: mpsc::WeakSender<ImEvent>,
}

impl ImClient {
    /// Connects with `cfg` (its password is the login token; session expiry 0 is enough:
    /// sync fills any gap), subscribes to the inbox and responses, and returns the client
    /// with its event stream once the subscriptions are acknowledged.
    pub async fn connect(mut cfg: Config) -> Result<(ImClient, mpsc::Receiver<ImEvent>), ImError> {
        // No session to resume: answers to a previous process's requests must not come
        // back to this one (sync fills any gap in events).
        cfg.session_expiry = 0;
        let (client, mut raw) = Client::start(cfg)?;
        let requests = Correlator::new();
        let (tx, rx) = mpsc::channel(1024);
        let events = tx.downgrade();
        let w = requests.clone();
        let features_due = Arc::new(AtomicBool::new(false));
        let due = features_due.clone();
        let seen = Arc::new(Seen::default());
        let seen2 = seen.clone();
        tokio::spawn(async move {
            // Answers are dispatched here and never wait for the app: when the app does not
            // keep up with its events, new events are dropped and counted, and the app gets
            // `Lagged` (sync recovers every message) once it reads again.
            let mut dropped = 0u64;
            'events: while let Some(ev) = raw.recv().await {
                let out = match ev {
                    Event::Message(p) => {
                        let out = dispatch(&w, *p);
                        if let Some(ImEvent::Event(e)) = &out[0]
                            && let Some(im::event::Kind::Message(m)) = &e.kind
                        {
                            // Messages skipped in its conversation: lost on the way (QoS 0).
                            dropped += seen2.message(m) + seen2.take_unreported();
                        }
                        out
                    }
                    Event::Connected { reconnects, .. } => {
                        if reconnects > 0 {
                            due.store(true, Ordering::Relaxed);
                        }
                        [Some(ImEvent::Connected { reconnects }), None]
                    }
                    Event::Disconnected { reason } => {
                        [Some(ImEvent::Disconnected { reason }), None]
                    }
                    Event::Heartbeat { .. } | Event::Probe { .. } => [None, None],
                };
                for e in out.into_iter().flatten() {
                    if dropped > 0 {
                        match tx.try_send(ImEvent::Lagged { dropped }) {
                            Ok(()) => dropped = 0,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                dropped += 1;
                                continue;
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => break 'events,
                        }
                    }
                    match tx.try_send(e) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => dropped += 1,
                        Err(mpsc::error::TrySendError::Closed(_)) => break 'events,
                    }
                }
            }
            // The client stopped: requests still waiting fail now instead of timing out.
            w.fail_all();
        });
        for filter in [INBOX, "$im/resp/#"] {
            // No Local on the inbox: a message this device sends is not echoed back to it
            // (its `SendResponse` has the seq and time); the user's other devices still get
            // it. One publish and one PUBACK fewer per message sent. Both at QoS 0: with no
            // session kept (expiry 0) an unacknowledged event or answer is lost with the
            // connection either way, and sync (events) or a resend (answers) recovers it;
            // a message lost while connected shows as a skipped seq (`im_gaps`). QoS 1
            // would only add a PUBACK per event and per request.
            let inbox = filter == INBOX;
            let opts = SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local: inbox,
                ..SubscriptionOptions::default()
            };
            let codes = client.subscribe_with(filter, opts).await?;
            if let Some(code) = codes.into_iter().find(|c| c.is_error()) {
                return Err(ImError::Subscribe(
                    if filter == INBOX { INBOX } else { "$im/resp/#" },
                    code,
                ));
            }
        }
        // Unread counts may come inside message events (one publish per recipient instead
        // of two); the event stream the app sees is the same (see `dispatch`). Said again
        // after each reconnect.
        features(&client).await?;
        let im = ImClient {
            client,
            requests,
            features_due,
            seen,
            events,
        };
        Ok((im, rx))
    }

    /// The underlying MQTT client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends one request and waits for its answer.
    pub async fn request<Req, Resp>(&self, op: &str, req: &Req) -> Result<Resp, ImError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        if self.features_due.swap(false, Ordering::Relaxed) {
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = features(&client).await {
                    tracing::debug!(error = %e, "features request after reconnect failed");
                }
            });
        }
        // A send's seq is this device's own (not echoed): skipped seqs wait for it.
        let sending = (op == "send").then(|| self.seen.sending());
        let (id, correlation, rx) = self.requests.begin();
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("$im/req/{op}"),
            pkid: 0,
            properties: Properties {
                response_topic: Some(RESPONSES.into()),
                correlation_data: Some(correlation),
                ..Properties::default()
            },
            payload: Bytes::from(req.encode_to_vec()),
        };
        if let Err(e) = self.client.publish_message(p).await {
            self.requests.cancel(id);
            return Err(e.into());
        }
        let body = match self.requests.wait(id, rx, REQUEST_TIMEOUT).await {
            Ok(b) => b,
            Err(NoAnswer::Closed) => return Err(Error::Closed.into()),
            Err(NoAnswer::Timeout) => return Err(ImError::Timeout(REQUEST_TIMEOUT)),
        };
        // Every answer has the status as field 1: read it first.
        let status = im::Ack::decode(body.clone())
            .map_err(|e| ImError::Decode(e.to_string()))?
            .status
            .unwrap_or_default();
        if let Some(send) = sending {
            if status.code == 0
                && let Ok(r) = im::SendResponse::decode(body.clone())
            {
                send.sent(&r.conversation, r.seq);
            }
            drop(send);
            self.report_unseen();
        }
        if status.code != 0 {
            return Err(ImError::Status {
                code: status.code,
                message: status.message,
            });
        }
        Resp::decode(body).map_err(|e| ImError::Decode(e.to_string()))
    }

    /// Sends a 1:1 text message.
    pub async fn send_text(
        &self,
        to: &str,
        client_msg_id: &str,
        text: &str,
    ) -> Result<im::SendResponse, ImError> {
        self.send(im::SendRequest {
            to: to.into(),
            client_msg_id: client_msg_id.into(),
            content: Some(im::Content {
                body: Some(im::content::Body::Text(im::Text { text: text.into() })),
            }),
            ..im::SendRequest::default()
        })
        .await
    }

    /// Sends a message (`request("send")`: its seq is noted, so the next message is not
    /// taken for a gap).
    pub async fn send(&self, req: im::SendRequest) -> Result<im::SendResponse, ImError> {
        self.request("send", &req).await
    }

    /// Tells the app of seqs that no send accounted for (`Lagged`); if its event stream
    /// is full they are told before the next event instead.
    fn report_unseen(&self) {
        let dropped = self.seen.take_unreported();
        if dropped == 0 {
            return;
        }
        let Some(tx) = self.events.upgrade() else {
            return;
        };
        if tx.try_send(ImEvent::Lagged { dropped }).is_err() {
            // Not lost: the event task adds it to the next event's report.
            self.seen.give_back(dropped);
        }
    }

    /// One page of sync from `cursors` (conversation id → last seq held).
    pub async fn sync(
        &self,
        cursors: &HashMap<String, u64>,
        limit: u32,
    ) -> Result<im::SyncResponse, ImError> {
        let req = im::SyncRequest {
            cursors: cursors
                .iter()
                .map(|(c, s)| im::Cursor {
                    conversation: c.clone(),
                    seq: *s,
                })
                .collect(),
            limit,
            conversations_since_ms: 0,
        };
        let resp: im::SyncResponse = self.request("sync", &req).await?;
        for m in &resp.messages {
            // Had now: not a gap when the next event follows them.
            self.seen.synced(m);
        }
        Ok(resp)
    }

    /// Syncs until nothing is left, advancing `cursors`; returns every message in the
    /// order received (by conversation, then seq) and the last conversation list.
    pub async fn sync_all(
        &self,
        cursors: &mut HashMap<String, u64>,
    ) -> Result<(Vec<im::Message>, im::SyncResponse), ImError> {
        let mut all = Vec::new();
        for _ in 0..SYNC_ALL_MAX_PAGES {
            let mut page = self.sync(cursors, 0).await?;
            for m in &page.messages {
                let c = cursors.entry(m.conversation.clone()).or_insert(0);
                *c = (*c).max(m.seq);
            }
            all.append(&mut page.messages);
            if !page.more {
                return Ok((all, page));
            }
        }
        Err(ImError::Decode("sync did not finish".into()))
    }

    pub async fn history(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<im::HistoryResponse, ImError> {
        let req = im::HistoryRequest {
            conversation: conversation.into(),
            before_seq,
            limit,
        };
        self.request("history", &req).await
    }

    /// Marks `conversation` read up to `seq` (every device of the user follows).
    pub async fn read(&self, conversation: &str, seq: u64) -> Result<(), ImError> {
        let req = im::ReadRequest {
            conversation: conversation.into(),
            seq,
        };
        self.request::<_, im::Ack>("read", &req).await.map(|_| ())
    }

    /// Tells the sender this device received `conversation` up to `seq`.
    pub async fn delivered(&self, conversation: &str, seq: u64) -> Result<(), ImError> {
        let req = im::ReadRequest {
            conversation: conversation.into(),
            seq,
        };
        self.request::<_, im::Ack>("delivered", &req)
            .await
            .map(|_| ())
    }

    pub async fn recall(&self, conversation: &str, seq: u64) -> Result<(), ImError> {
        let req = im::RecallRequest {
            conversation: conversation.into(),
            seq,
        };
        self.request::<_, im::Ack>("recall", &req).await.map(|_| ())
    }

    pub async fn typing(&self, conversation: &str) -> Result<(), ImError> {
        let req = im::TypingRequest {
            conversation: conversation.into(),
        };
        self.request::<_, im::Ack>("typing", &req).await.map(|_| ())
    }

    pub async fn conversations(&self) -> Result<im::ConversationsResponse, ImError> {
        self.request("conversations", &im::ConversationsRequest { since_ms: 0 })
            .await
    }

    pub async fn update_conversation(
        &self,
        req: im::UpdateConversationRequest,
    ) -> Result<(), ImError> {
        self.request::<_, im::Ack>("update_conversation", &req)
            .await
            .map(|_| ())
    }

    /// Tells the broker the app went to the background (`true`) or came back: while every
    /// device of the user is in the background, new messages also produce push jobs.
    pub async fn set_background(&self, background: bool) -> Result<(), ImError> {
        self.request::<_, im::Ack>("device_state", &im::DeviceStateRequest { background })
            .await
            .map(|_| ())
    }

    /// Disconnects.
    pub async fn shutdown(&self) {
        self.client.shutdown().await;
    }
}

/// Tells the broker what this connection understands (`features`: unread counts inside
/// message events); done once the broker acknowledged it.
async fn features(client: &Client) -> Result<(), Error> {
    let req = im::FeaturesRequest {
        inline_unread: true,
    };
    client
        .publish("$im/req/features", req.encode_to_vec(), QoS::AtLeastOnce)
        .await
}

/// Routes one incoming PUBLISH: answers to their waiters, events to the app. A message
/// event that carries the recipient's unread counts (`unread_after`) becomes the two
/// events the broker sends otherwise: the message, then `unread`.
fn dispatch(requests: &Correlator, p: Publish) -> [Option<ImEvent>; 2] {
    if p.topic.starts_with("$im/resp/") {
        requests.answer(p);
        return [None, None];
    }
    if p.topic == INBOX {
        return match im::Event::decode(p.payload) {
            Ok(mut e) => {
                let unread = e.unread_after.take().map(|u| {
                    ImEvent::Event(Box::new(im::Event {
                        kind: Some(im::event::Kind::Unread(u)),
                        unread_after: None,
                    }))
                });
                [Some(ImEvent::Event(Box::new(e))), unread]
            }
            Err(e) => {
                tracing::warn!(error = %e, "undecodable IM event skipped");
                [None, None]
            }
        };
    }
    [None, None]
}
