//! Call signalling end to end (docs/im/calls.md): users' devices over TCP with the SDK;
//! every outcome ends with `ENDED` to everyone and, for two-party calls, a `CallLog`
//! message in the pair's 1:1 conversation. Timeouts are configured short and waited for
//! on the events they produce.

use std::collections::HashMap;

use bytes::Bytes;
use switchboard_client::im::ImError;
use switchboard_proto::im::{self, call_event::Kind as Ev, event::Kind};
use switchboard_tests::im::{Device, ImBroker};

fn status(e: &ImError) -> u32 {
    match e {
        ImError::Status { code, .. } => *code,
        other => panic!("expected an IM status error, got {other}"),
    }
}

/// The next call event of kind `kind` (others skipped).
async fn call_event(d: &mut Device, kind: Ev) -> im::CallEvent {
    d.next(|k| match k {
        Kind::Call(c) if c.kind == kind as i32 => Some(c.clone()),
        _ => None,
    })
    .await
}

/// The next call log message.
async fn call_log(d: &mut Device) -> (im::Message, im::CallLog) {
    d.next(|k| match k {
        Kind::Message(m) => match m.content.as_ref().and_then(|c| c.body.as_ref()) {
            Some(im::content::Body::CallLog(l)) => Some((m.clone(), l.clone())),
            _ => None,
        },
        _ => None,
    })
    .await
}

async fn setup(users: &[&str]) -> (ImBroker, u64) {
    let b = ImBroker::start().await;
    let t = b.tenant("voip").await;
    for u in users {
        b.user(t, u).await;
    }
    (b, t)
}

fn none() -> Bytes {
    Bytes::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_accept_signal_hang_up_and_the_call_log_is_in_the_conversation() {
    let (b, t) = setup(&["alice", "bob"]).await;
    let mut alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let r = alice
        .client
        .call_invite("", &["bob"], true, Bytes::from_static(b"sdp-offer"), 0)
        .await
        .expect("invite");
    assert!(r.busy.is_empty());
    let inv = call_event(&mut bob, Ev::Invited).await;
    assert_eq!(
        (
            inv.call_id.as_str(),
            inv.caller.as_str(),
            inv.video,
            &inv.payload[..]
        ),
        (r.call_id.as_str(), "alice", true, &b"sdp-offer"[..])
    );
    assert_eq!(inv.targets, ["bob"]);
    bob.client
        .call_action("ringing", &r.call_id, "", none())
        .await
        .expect("ringing");
    assert_eq!(call_event(&mut alice, Ev::Ringing).await.from, "bob");
    bob.client
        .call_action("accept", &r.call_id, "", Bytes::from_static(b"sdp-answer"))
        .await
        .expect("accept");
    let acc = call_event(&mut alice, Ev::Accepted).await;
    assert_eq!(
        (acc.from.as_str(), acc.device.as_str(), &acc.payload[..]),
        ("bob", "bob-1", &b"sdp-answer"[..])
    );
    // Opaque signals pass through to one participant.
    alice
        .client
        .call_action("signal", &r.call_id, "bob", Bytes::from_static(b"ice-1"))
        .await
        .expect("signal");
    let sig = call_event(&mut bob, Ev::Signal).await;
    assert_eq!(
        (sig.from.as_str(), &sig.payload[..]),
        ("alice", &b"ice-1"[..])
    );
    // Cancelling an answered call is a conflict; hanging up ends it.
    let e = alice
        .client
        .call_action("cancel", &r.call_id, "", none())
        .await
        .expect_err("answered");
    assert_eq!(status(&e), 409);
    alice
        .client
        .call_action("hangup", &r.call_id, "", none())
        .await
        .expect("hang up");
    assert_eq!(call_event(&mut bob, Ev::HungUp).await.from, "alice");
    for d in [&mut alice, &mut bob] {
        let end = call_event(d, Ev::Ended).await;
        assert_eq!(end.outcome, "completed");
        let (m, log) = call_log(d).await;
        assert_eq!(
            (m.from.as_str(), m.conversation.as_str()),
            ("alice", "p:1:2")
        );
        assert_eq!((log.outcome.as_str(), log.video), ("completed", true));
        assert_eq!(log.call_id, r.call_id);
        assert_eq!(log.participants, ["alice", "bob"]);
    }
    // Stored: bob's sync has it.
    let (messages, _) = bob
        .client
        .sync_all(&mut HashMap::new())
        .await
        .expect("sync");
    assert!(messages.iter().any(|m| matches!(
        m.content.as_ref().and_then(|c| c.body.as_ref()),
        Some(im::content::Body::CallLog(l)) if l.call_id == r.call_id
    )));
    // The call is gone.
    let e = bob
        .client
        .call_action("hangup", &r.call_id, "", none())
        .await
        .expect_err("over");
    assert_eq!(status(&e), 404);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_cancel_and_no_answer_each_end_with_their_outcome() {
    let (b, t) = setup(&["alice", "bob"]).await;
    let mut alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    // Rejected.
    let r = alice
        .client
        .call_invite("", &["bob"], false, none(), 0)
        .await
        .expect("invite");
    call_event(&mut bob, Ev::Invited).await;
    bob.client
        .call_action("reject", &r.call_id, "", none())
        .await
        .expect("reject");
    assert_eq!(call_event(&mut alice, Ev::Rejected).await.from, "bob");
    assert_eq!(call_event(&mut alice, Ev::Ended).await.outcome, "rejected");
    assert_eq!(call_log(&mut alice).await.1.outcome, "rejected");
    // Cancelled by the caller before an answer.
    let r = alice
        .client
        .call_invite("", &["bob"], false, none(), 0)
        .await
        .expect("invite");
    call_event(&mut bob, Ev::Invited).await;
    let e = bob
        .client
        .call_action("cancel", &r.call_id, "", none())
        .await
        .expect_err("only the caller cancels; bob has not answered");
    assert_eq!(status(&e), 409);
    alice
        .client
        .call_action("cancel", &r.call_id, "", none())
        .await
        .expect("cancel");
    assert_eq!(call_event(&mut bob, Ev::Cancelled).await.from, "alice");
    assert_eq!(call_event(&mut bob, Ev::Ended).await.outcome, "cancelled");
    assert_eq!(call_log(&mut bob).await.1.outcome, "cancelled");
    // No answer within the ring time: missed.
    let r = alice
        .client
        .call_invite("", &["bob"], false, none(), 200)
        .await
        .expect("invite");
    call_event(&mut bob, Ev::Invited).await;
    let missed = call_event(&mut alice, Ev::Missed).await;
    assert_eq!(
        (missed.from.as_str(), missed.call_id.as_str()),
        ("bob", r.call_id.as_str())
    );
    assert_eq!(call_event(&mut bob, Ev::Ended).await.outcome, "missed");
    let (_, log) = call_log(&mut bob).await;
    assert_eq!((log.outcome.as_str(), log.duration_ms), ("missed", 0));
    // Bad requests get their codes.
    let e = alice
        .client
        .call_invite("", &["alice"], false, none(), 0)
        .await
        .expect_err("self");
    assert_eq!(status(&e), 400);
    let e = alice
        .client
        .call_invite("", &["nobody"], false, none(), 0)
        .await
        .expect_err("no such user");
    assert_eq!(status(&e), 404);
    let e = alice
        .client
        .call_invite("", &["bob"], false, none(), 5)
        .await
        .expect_err("ring time too short");
    assert_eq!(status(&e), 400);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_in_another_call_is_busy() {
    let (b, t) = setup(&["alice", "bob", "carol"]).await;
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let mut carol = b.device(t, "carol", "carol-1").await;
    let r = alice
        .client
        .call_invite("", &["bob"], false, none(), 0)
        .await
        .expect("invite");
    call_event(&mut bob, Ev::Invited).await;
    bob.client
        .call_action("accept", &r.call_id, "", none())
        .await
        .expect("accept");
    let busy = carol
        .client
        .call_invite("", &["bob"], false, none(), 0)
        .await
        .expect("invite");
    assert_eq!(busy.busy, ["bob"]);
    assert_eq!(call_event(&mut carol, Ev::Busy).await.from, "bob");
    assert_eq!(call_event(&mut carol, Ev::Ended).await.outcome, "busy");
    assert_eq!(call_log(&mut carol).await.1.outcome, "busy");
    // A caller already in a call cannot start another.
    let e = bob
        .client
        .call_invite("", &["carol"], false, none(), 0)
        .await
        .expect_err("in a call");
    assert_eq!(status(&e), 409);
    // Someone outside the call cannot act on it.
    let e = carol
        .client
        .call_action("hangup", &r.call_id, "", none())
        .await
        .expect_err("not in it");
    assert_eq!(status(&e), 403);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_party_invite_more_and_the_call_lasts_while_two_remain() {
    let (b, t) = setup(&["alice", "bob", "carol"]).await;
    let mut alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let mut carol = b.device(t, "carol", "carol-1").await;
    let r = alice
        .client
        .call_invite("", &["bob"], false, none(), 0)
        .await
        .expect("invite");
    call_event(&mut bob, Ev::Invited).await;
    bob.client
        .call_action("accept", &r.call_id, "", none())
        .await
        .expect("accept");
    // Bob (in the call) brings carol in; everyone sees who is rung.
    let more = bob
        .client
        .call_invite(&r.call_id, &["carol"], false, none(), 0)
        .await
        .expect("invite more");
    assert_eq!(more.call_id, r.call_id);
    let inv = call_event(&mut carol, Ev::Invited).await;
    assert_eq!(
        (inv.from.as_str(), inv.targets.clone()),
        ("bob", vec!["carol".to_string()])
    );
    assert_eq!(inv.participants, ["alice", "bob", "carol"]);
    let seen = alice
        .next(|k| match k {
            Kind::Call(c) if c.kind == Ev::Invited as i32 && c.from == "bob" => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(seen.targets, ["carol"]);
    carol
        .client
        .call_action("accept", &r.call_id, "", none())
        .await
        .expect("accept");
    // (Bob's answer went by while alice waited for the invitation of carol.)
    assert_eq!(call_event(&mut alice, Ev::Accepted).await.from, "carol");
    // Alice leaves: bob and carol go on.
    alice
        .client
        .call_action("hangup", &r.call_id, "", none())
        .await
        .expect("hang up");
    let left = call_event(&mut carol, Ev::HungUp).await;
    assert_eq!(
        (left.from.as_str(), left.participants.clone()),
        ("alice", vec!["bob".to_string(), "carol".to_string()])
    );
    carol
        .client
        .call_action("signal", &r.call_id, "", Bytes::from_static(b"to-all"))
        .await
        .expect("still on");
    assert_eq!(
        &call_event(&mut bob, Ev::Signal).await.payload[..],
        b"to-all"
    );
    carol
        .client
        .call_action("hangup", &r.call_id, "", none())
        .await
        .expect("hang up");
    for d in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(call_event(d, Ev::Ended).await.outcome, "completed");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_device_answers_the_others_stop_ringing() {
    let (b, t) = setup(&["alice", "bob"]).await;
    let mut alice = b.device(t, "alice", "alice-1").await;
    let mut phone = b.device(t, "bob", "bob-phone").await;
    let mut pc = b.device(t, "bob", "bob-pc").await;
    let r = alice
        .client
        .call_invite("", &["bob"], false, none(), 0)
        .await
        .expect("invite");
    call_event(&mut phone, Ev::Invited).await;
    call_event(&mut pc, Ev::Invited).await;
    pc.client
        .call_action("accept", &r.call_id, "", none())
        .await
        .expect("accept on the PC");
    let acc = call_event(&mut phone, Ev::Accepted).await;
    assert_eq!(
        (acc.from.as_str(), acc.device.as_str()),
        ("bob", "bob-pc"),
        "the phone learns bob answered elsewhere"
    );
    assert_eq!(call_event(&mut alice, Ev::Accepted).await.device, "bob-pc");
    let e = phone
        .client
        .call_action("accept", &r.call_id, "", none())
        .await
        .expect_err("answered already");
    assert_eq!(status(&e), 409);
    b.stop().await;
}
