//! Decodes arbitrary bytes as a stream of MQTT 3.1.1 and 5.0 packets. Whatever decodes must
//! encode to a packet that decodes to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_proto::{Packet, Version};

fuzz_target!(|data: &[u8]| {
    for v in [Version::V3_1_1, Version::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(p)) = Packet::read(&mut buf, v, 1 << 20) {
            // CONNECT carries its own version; re-encode it with that one.
            let ev = match &p {
                Packet::Connect(c) => c.version,
                _ => v,
            };
            let mut out = BytesMut::new();
            p.encode(ev, &mut out);
            let again = Packet::read(&mut out, ev, usize::MAX)
                .expect("re-encoded packet decodes")
                .expect("complete");
            assert_eq!(again, p);
        }
    }
});
