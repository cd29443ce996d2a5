//! Call signalling (IM part 2, seeds 000/001): invite, ringing, accept, reject, busy,
//! cancel, hang up and opaque signals (SDP offers, answers, ICE candidates), 1:1 and
//! multi-party, with a ring timeout. Media is out of scope: a WebRTC app or a media
//! server is built on these messages.
//!
//! Calls live in memory ([`Calls`], bounded): a broker restart ends them (clients see
//! their requests answered 404 and hang up). Every event goes to every device of every
//! participant through the user's inbox, so when one device answers the others see
//! `ACCEPTED` naming the answering device and stop ringing. A user who is in a call or
//! being rung is busy for others. When a call ends, a `CallLog` message is appended to
//! the 1:1 conversation of a two-party call (multi-party calls are logged nowhere until
//! groups can carry them: see docs/im/calls.md).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message as _;
use switchboard_proto::QoS;
use switchboard_proto::im::{self, ConvType, call_event::Kind as Ev, event::Kind};

use super::error::ok;
use super::keys::ConvId;
use super::messaging::{Member, Sender};
use super::{ImError, ImLogin, ImService, now_ms, random_hex};

/// Calls in progress over all tenants; more answer 409.
const MAX_CALLS: usize = 100_000;
/// People in one call (caller included).
const MAX_PARTIES: usize = 16;
/// Ring time when the invite names none, and its bounds.
const DEFAULT_RING_MS: u32 = 60_000;
const RING_MS: std::ops::RangeInclusive<u32> = 100..=120_000;
/// Largest opaque payload (an SDP offer is a few KB).
const MAX_PAYLOAD: usize = 64 * 1024;

/// Calls in progress (in memory).
#[derive(Debug, Default)]
pub struct Calls {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    calls: HashMap<(u64, String), Call>,
    /// (tenant, uid) → the call the user is in or rung for.
    busy: HashMap<(u64, u64), String>,
    next_token: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Being rung; the token names its timer.
    Ringing(u64),
    Joined,
}

#[derive(Debug, Clone)]
struct Party {
    uid: u64,
    role: Role,
}

#[derive(Debug)]
struct Call {
    caller: String,
    video: bool,
    answered_ms: Option<u64>,
    /// Account → party, for those in the call or rung now.
    parties: BTreeMap<String, Party>,
    /// Everyone ever in the call or rung (told when it ends), account → uid.
    everyone: BTreeMap<String, u64>,
    /// Everyone ever invited, busy ones included (the call log's people), account → uid.
    invited: BTreeMap<String, u64>,
    /// Why the last invitee went without answering ("rejected", "missed", "busy").
    unanswered: &'static str,
}

/// What is left to do once a call ended (outside the lock).
struct Ended {
    call_id: String,
    caller: String,
    video: bool,
    outcome: String,
    duration_ms: u64,
    invited: BTreeMap<String, u64>,
}

impl Call {
    fn participants(&self) -> Vec<String> {
        self.parties.keys().cloned().collect()
    }

    fn event(&self, kind: Ev, call_id: &str, from: &str) -> im::CallEvent {
        im::CallEvent {
            kind: kind as i32,
            call_id: call_id.to_owned(),
            from: from.to_owned(),
            participants: self.participants(),
            caller: self.caller.clone(),
            video: self.video,
            time_ms: now_ms(),
            ..im::CallEvent::default()
        }
    }

    fn is_over(&self) -> bool {
        let joined = self
            .parties
            .values()
            .filter(|p| p.role == Role::Joined)
            .count();
        let ringing = self.parties.len() - joined;
        joined <= 1 && ringing == 0
    }
}

impl ImService {
    /// A client's call request `$im/req/call/{op}`.
    pub(super) async fn call_request(
        &self,
        login: &ImLogin,
        client_id: &str,
        op: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        // Cluster mode: a call owned by another node is handled there.
        if let Some(answer) = self.call_forwarded(login, client_id, op, payload).await {
            return answer;
        }
        if op == "invite" {
            let req = im::CallInviteRequest::decode(payload)
                .map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))?;
            return Ok(self.call_invite(login, req).await?.encode_to_vec());
        }
        let req = im::CallRequest::decode(payload)
            .map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))?;
        if req.payload.len() > MAX_PAYLOAD || req.reason.len() > 256 {
            return Err(ImError::TooLarge(format!(
                "payload is at most {MAX_PAYLOAD} bytes, reason 256"
            )));
        }
        let ended = {
            let mut guard = self.calls.inner.lock();
            let st = &mut *guard;
            let key = (login.tenant, req.call_id.clone());
            let call = st
                .calls
                .get_mut(&key)
                .ok_or_else(|| ImError::NotFound(format!("call {}", req.call_id)))?;
            let me = login.account.as_str();
            let role = call
                .parties
                .get(me)
                .map(|p| p.role)
                .ok_or_else(|| ImError::Forbidden(format!("not in call {}", req.call_id)))?;
            let ringing = matches!(role, Role::Ringing(_));
            // Told: everyone in the call before the change (the actor's other devices too).
            let before: Vec<u64> = call.parties.values().map(|p| p.uid).collect();
            let mut ev = match op {
                "ringing" if ringing => call.event(Ev::Ringing, &req.call_id, me),
                "accept" if ringing => {
                    if let Some(p) = call.parties.get_mut(me) {
                        p.role = Role::Joined;
                    }
                    call.answered_ms.get_or_insert_with(now_ms);
                    let mut ev = call.event(Ev::Accepted, &req.call_id, me);
                    ev.device = client_id.to_owned();
                    ev
                }
                "reject" | "busy" if ringing => {
                    call.parties.remove(me);
                    st.busy.remove(&(login.tenant, login.uid));
                    let (kind, why) = if op == "busy" {
                        (Ev::Busy, "busy")
                    } else {
                        (Ev::Rejected, "rejected")
                    };
                    call.unanswered = why;
                    call.event(kind, &req.call_id, me)
                }
                "cancel" | "hangup" if !ringing => {
                    if op == "cancel" && call.answered_ms.is_some() {
                        return Err(ImError::Conflict(
                            "the call was answered: hang up instead".into(),
                        ));
                    }
                    if call.answered_ms.is_none() && me == call.caller {
                        // The caller gave up before anyone answered: the call is over.
                        call.unanswered = "cancelled";
                        let ev = call.event(Ev::Cancelled, &req.call_id, me);
                        let ids: Vec<u64> = call.parties.values().map(|p| p.uid).collect();
                        call.parties.clear();
                        for uid in ids {
                            st.busy.remove(&(login.tenant, uid));
                        }
                        ev
                    } else if op == "cancel" {
                        return Err(ImError::Forbidden("only the caller may cancel".into()));
                    } else {
                        call.parties.remove(me);
                        st.busy.remove(&(login.tenant, login.uid));
                        call.event(Ev::HungUp, &req.call_id, me)
                    }
                }
                "signal" => {
                    if !req.to.is_empty() && !call.parties.contains_key(&req.to) {
                        return Err(ImError::NotFound(format!("{} is not in the call", req.to)));
                    }
                    call.event(Ev::Signal, &req.call_id, me)
                }
                "ringing" | "accept" | "reject" | "busy" => {
                    return Err(ImError::Conflict(format!("{op}: you are not being rung")));
                }
                "cancel" | "hangup" => {
                    return Err(ImError::Conflict(format!("{op}: you have not answered")));
                }
                _ => return Err(ImError::NotFound(format!("no such request: call/{op}"))),
            };
            ev.payload = req.payload.clone();
            ev.reason = req.reason.clone();
            let told_busy = before.clone();
            if op == "signal" && !req.to.is_empty() {
                let uid = call.parties.get(&req.to).map_or(0, |p| p.uid);
                self.emit(login.tenant, uid, Kind::Call(ev), QoS::AtLeastOnce);
            } else {
                for uid in before
                    .into_iter()
                    .filter(|u| op != "signal" || *u != login.uid)
                {
                    self.emit(login.tenant, uid, Kind::Call(ev.clone()), QoS::AtLeastOnce);
                }
            }
            let ended = self.end_if_over(st, login.tenant, &req.call_id);
            self.tell_busy(st, login.tenant, &told_busy);
            ended
        };
        if let Some(e) = ended {
            self.call_ended(login.tenant, e).await;
        }
        Ok(im::Ack { status: ok() }.encode_to_vec())
    }

    /// Starts a call or invites more people into one.
    async fn call_invite(
        &self,
        login: &ImLogin,
        req: im::CallInviteRequest,
    ) -> Result<im::CallInviteResponse, ImError> {
        if req.invitees.is_empty() || req.invitees.len() >= MAX_PARTIES {
            return Err(ImError::BadRequest(format!(
                "1..={} invitees",
                MAX_PARTIES - 1
            )));
        }
        if req.payload.len() > MAX_PAYLOAD {
            return Err(ImError::TooLarge(format!(
                "payload is at most {MAX_PAYLOAD} bytes"
            )));
        }
        let ring_ms = match req.timeout_ms {
            0 => DEFAULT_RING_MS,
            t if RING_MS.contains(&t) => t,
            t => {
                return Err(ImError::BadRequest(format!(
                    "timeout_ms {t} not in 100..=120000"
                )));
            }
        };
        let mut invitees = Vec::new();
        for account in &req.invitees {
            let u = self
                .user(login.tenant, account)?
                .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
            if u.uid == login.uid {
                return Err(ImError::BadRequest("cannot call yourself".into()));
            }
            if !invitees.iter().any(|(a, _): &(String, u64)| a == account) {
                invitees.push((u.account, u.uid));
            }
        }
        let new_call = req.call_id.is_empty();
        let call_id = if new_call {
            self.cluster_call_id(random_hex(8)?)
        } else {
            req.call_id.clone()
        };
        let (busy, ended, timers) = {
            let mut guard = self.calls.inner.lock();
            let st = &mut *guard;
            let key = (login.tenant, call_id.clone());
            if new_call {
                if st.busy.contains_key(&(login.tenant, login.uid))
                    || self.busy_elsewhere(login.tenant, login.uid)
                {
                    return Err(ImError::Conflict("you are in another call".into()));
                }
                if st.calls.len() >= MAX_CALLS {
                    return Err(ImError::Unavailable("too many calls in progress".into()));
                }
                let mut parties = BTreeMap::new();
                parties.insert(
                    login.account.clone(),
                    Party {
                        uid: login.uid,
                        role: Role::Joined,
                    },
                );
                st.calls.insert(
                    key.clone(),
                    Call {
                        caller: login.account.clone(),
                        video: req.video,
                        answered_ms: None,
                        everyone: BTreeMap::from([(login.account.clone(), login.uid)]),
                        invited: BTreeMap::from([(login.account.clone(), login.uid)]),
                        parties,
                        unanswered: "missed",
                    },
                );
                st.busy.insert((login.tenant, login.uid), call_id.clone());
            }
            let call = st
                .calls
                .get_mut(&key)
                .ok_or_else(|| ImError::NotFound(format!("call {call_id}")))?;
            if call.parties.get(&login.account).map(|p| p.role) != Some(Role::Joined) {
                return Err(ImError::Forbidden(format!("not in call {call_id}")));
            }
            if call.parties.len() + invitees.len() > MAX_PARTIES
                || call.invited.len() >= 2 * MAX_PARTIES
            {
                return Err(ImError::Conflict(format!(
                    "at most {MAX_PARTIES} people in a call"
                )));
            }
            let (mut busy, mut rung, mut timers) = (Vec::new(), Vec::new(), Vec::new());
            for (account, uid) in invitees {
                if call.parties.contains_key(&account) {
                    continue;
                }
                call.invited.insert(account.clone(), uid);
                if st.busy.contains_key(&(login.tenant, uid))
                    || self.busy_elsewhere(login.tenant, uid)
                {
                    busy.push(account);
                    continue;
                }
                st.next_token += 1;
                let token = st.next_token;
                call.parties.insert(
                    account.clone(),
                    Party {
                        uid,
                        role: Role::Ringing(token),
                    },
                );
                call.everyone.insert(account.clone(), uid);
                st.busy.insert((login.tenant, uid), call_id.clone());
                timers.push((account.clone(), token));
                rung.push(account);
            }
            let me = login.account.as_str();
            for account in &busy {
                call.unanswered = "busy";
                let ev = call.event(Ev::Busy, &call_id, account);
                self.emit(login.tenant, login.uid, Kind::Call(ev), QoS::AtLeastOnce);
            }
            if !rung.is_empty() {
                let mut ev = call.event(Ev::Invited, &call_id, me);
                ev.targets = rung;
                ev.payload = req.payload.clone();
                for p in call.parties.values() {
                    self.emit(
                        login.tenant,
                        p.uid,
                        Kind::Call(ev.clone()),
                        QoS::AtLeastOnce,
                    );
                }
            }
            let touched: Vec<u64> = call.everyone.values().copied().collect();
            let ended = self.end_if_over(st, login.tenant, &call_id);
            self.tell_busy(st, login.tenant, &touched);
            (busy, ended, timers)
        };
        if let Some(e) = ended {
            self.call_ended(login.tenant, e).await;
        } else {
            self.ring_timers(login.tenant, &call_id, timers, ring_ms);
        }
        Ok(im::CallInviteResponse {
            status: ok(),
            call_id,
            busy,
        })
    }

    /// Starts the "no answer" timers of the invitations just made.
    fn ring_timers(&self, tid: u64, call_id: &str, timers: Vec<(String, u64)>, ring_ms: u32) {
        let Some(b) = self.broker() else { return };
        let Some(service) = b.im.clone() else { return };
        let (call_id, shutdown) = (call_id.to_owned(), b.shutdown.clone());
        b.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(u64::from(ring_ms))) => {}
                _ = shutdown.cancelled() => return,
            }
            for (account, token) in timers {
                service.ring_timeout(tid, &call_id, &account, token).await;
            }
        });
    }

    /// Invitee `account` did not answer in time: missed.
    async fn ring_timeout(&self, tid: u64, call_id: &str, account: &str, token: u64) {
        let ended = {
            let mut guard = self.calls.inner.lock();
            let st = &mut *guard;
            let Some(call) = st.calls.get_mut(&(tid, call_id.to_owned())) else {
                return;
            };
            let Some(p) = call
                .parties
                .get(account)
                .filter(|p| p.role == Role::Ringing(token))
            else {
                return;
            };
            let uid = p.uid;
            call.parties.remove(account);
            call.unanswered = "missed";
            st.busy.remove(&(tid, uid));
            let ev = call.event(Ev::Missed, call_id, account);
            let told: Vec<u64> = call.parties.values().map(|p| p.uid).chain([uid]).collect();
            for &u in &told {
                self.emit(tid, u, Kind::Call(ev.clone()), QoS::AtLeastOnce);
            }
            let ended = self.end_if_over(st, tid, call_id);
            self.tell_busy(st, tid, &told);
            ended
        };
        if let Some(e) = ended {
            self.call_ended(tid, e).await;
        }
    }

    /// Cluster mode: tells the other nodes the calls of users `uids` now (under the lock,
    /// so in order; `docs/cluster.md`).
    fn tell_busy(&self, st: &State, tid: u64, uids: &[u64]) {
        let Some(c) = self.cluster() else { return };
        for uid in uids {
            c.busy(
                tid,
                *uid,
                st.busy.get(&(tid, *uid)).map_or("", String::as_str),
            );
        }
    }

    /// Users in calls (or rung) on this node: (tenant, uid, call id) each.
    pub(super) fn busy_users(&self) -> Vec<(u64, u64, String)> {
        let st = self.calls.inner.lock();
        st.busy
            .iter()
            .map(|(&(tid, uid), call)| (tid, uid, call.clone()))
            .collect()
    }

    /// Removes the call if it is over (one or nobody left, nobody rung) and tells everyone.
    fn end_if_over(&self, st: &mut State, tid: u64, call_id: &str) -> Option<Ended> {
        let key = (tid, call_id.to_owned());
        if !st.calls.get(&key)?.is_over() {
            return None;
        }
        let call = st.calls.remove(&key)?;
        for p in call.parties.values() {
            st.busy.remove(&(tid, p.uid));
        }
        let (outcome, duration_ms) = match call.answered_ms {
            Some(t) => ("completed".to_owned(), now_ms().saturating_sub(t)),
            None => (call.unanswered.to_owned(), 0),
        };
        let mut ev = call.event(Ev::Ended, call_id, "");
        ev.outcome = outcome.clone();
        ev.duration_ms = duration_ms;
        for uid in call.everyone.values() {
            self.emit(tid, *uid, Kind::Call(ev.clone()), QoS::AtLeastOnce);
        }
        Some(Ended {
            call_id: call_id.to_owned(),
            caller: call.caller,
            video: call.video,
            outcome,
            duration_ms,
            invited: call.invited,
        })
    }

    /// Logs a finished two-party call in the pair's 1:1 conversation.
    async fn call_ended(&self, tid: u64, e: Ended) {
        if e.invited.len() != 2 {
            return;
        }
        let Some(caller_uid) = e.invited.get(&e.caller).copied() else {
            return;
        };
        let Some((callee, callee_uid)) = e
            .invited
            .iter()
            .find(|(a, _)| **a != e.caller)
            .map(|(a, u)| (a.clone(), *u))
        else {
            return;
        };
        let conv = ConvId::private(caller_uid, callee_uid);
        let msg = im::Message {
            conversation: conv.to_string(),
            conv_type: ConvType::Private as i32,
            from: e.caller.clone(),
            to: callee.clone(),
            client_msg_id: format!("call:{}", e.call_id),
            content: Some(im::Content {
                body: Some(im::content::Body::CallLog(im::CallLog {
                    call_id: e.call_id.clone(),
                    video: e.video,
                    outcome: e.outcome,
                    duration_ms: e.duration_ms,
                    participants: e.invited.keys().cloned().collect(),
                })),
            }),
            ..im::Message::default()
        };
        let members = [
            Member {
                uid: caller_uid,
                account: e.caller.clone(),
                peer: callee.clone(),
            },
            Member {
                uid: callee_uid,
                account: callee,
                peer: e.caller,
            },
        ];
        if let Err(err) = self
            .deliver(tid, &conv, msg, Some(Sender::user(caller_uid)), &members)
            .await
        {
            tracing::warn!(tenant = tid, call = %e.call_id, error = %err, "call log not stored");
        }
    }
}
