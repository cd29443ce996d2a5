//! Feeds arbitrary bytes to the server session state machine in arbitrary chunks, accepting
//! CONNECT and answering every event the way the broker would. It must never panic.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_proto::ReasonCode;
use switchboard_proto::session::{Accept, Event, ServerSession, SessionLimits};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut s = ServerSession::new(SessionLimits::default(), start);
    let mut buf = BytesMut::new();
    for (i, chunk) in data.chunks(7).enumerate() {
        let now = start + Duration::from_millis(i as u64 * 100);
        buf.extend_from_slice(chunk);
        if s.handle_read(now, &mut buf).is_err() {
            s.disconnect(ReasonCode::ProtocolError, None);
            return;
        }
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Connect(c) => s.accept(&c, Accept::default()),
                Event::Publish(p) => s.ack_publish(p.pkid, ReasonCode::Success),
                Event::Subscribe(sub) => s.send_suback(sub.pkid, vec![ReasonCode::Success; sub.filters.len()]),
                Event::Unsubscribe(u) => s.send_unsuback(u.pkid, vec![ReasonCode::Success; u.filters.len()]),
                // Re-authentication: answer it as a mechanism that is satisfied at once.
                Event::Auth(_) => s.auth_success(None),
                Event::Disconnect(_) | Event::Delivered { .. } | Event::Released { .. } | Event::Received { .. } => {}
            }
        }
        let _ = s.take_transmit();
        let _ = s.handle_timeout(now);
    }
});
