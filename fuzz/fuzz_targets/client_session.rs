//! Feeds arbitrary bytes, as if from a server, to the client session state machine in
//! arbitrary chunks (after a CONNACK that accepts), with publishes and subscribes of its own
//! in between and the clock moving. It must never panic.
#![no_main]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchboard_proto::session::{ClientConfig, ClientSession};
use switchboard_proto::{Properties, Publish, QoS, SubscriptionOptions};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let cfg = ClientConfig {
        clean_start: false,
        keep_alive: Duration::from_secs(1),
        max_packet_size: 4096,
        ..ClientConfig::new("fuzz")
    };
    let mut c = ClientSession::new(cfg, start);
    c.connect(start);
    let mut buf = BytesMut::from(&[0x20, 0x03, 0x00, 0x00, 0x00][..]);
    for (i, chunk) in data.chunks(7).enumerate() {
        let now = start + Duration::from_millis(i as u64 * 300);
        buf.extend_from_slice(chunk);
        if c.handle_read(now, &mut buf).is_err() {
            // The driver reconnects: the session must survive any error.
            c.connection_lost();
            c.connect(now);
            buf.clear();
            buf.extend_from_slice(&[0x20, 0x03, 0x01, 0x00, 0x00]);
            continue;
        }
        while c.poll_event().is_some() {}
        let qos = QoS::from_u8(chunk[0] % 3).unwrap_or_default();
        let _ = c.publish(
            now,
            Publish {
                dup: false,
                qos,
                retain: false,
                topic: "f".into(),
                pkid: 0,
                properties: Properties::default(),
                payload: Bytes::new(),
            },
        );
        if chunk[0] & 0x40 != 0 {
            let _ = c.subscribe(
                now,
                vec![("f/#".into(), SubscriptionOptions::default())],
                Properties::default(),
            );
        }
        let _ = c.take_transmit();
        if c.handle_timeout(now).is_err() {
            c.connection_lost();
            c.connect(now);
        }
    }
});
