//! A full disk: QoS 1 publishes are refused with a reason code instead of being
//! acknowledged and lost, QoS 0 keeps flowing, and the broker recovers when space returns.
//! Runs on a small filesystem made for the test: a tmpfs with a size limit, or else a
//! loop-mounted ext4 image. Both need root (as CI has); if neither can be made the test
//! fails: it never passes without having filled a disk.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::{RawClient, TempDir, TestBroker, connect_packet, persistent_connect};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a 6 MB filesystem on `at`: tmpfs, else an ext4 image at `image` on a loop
/// device. Panics if neither works.
fn small_filesystem(at: &std::path::Path, image: &std::path::Path) -> Mount {
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    if ok(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6M", "tmpfs"])
        .arg(at))
    {
        return Mount(at.to_owned());
    }
    let made = std::fs::File::create(image).and_then(|f| f.set_len(6 << 20));
    if made.is_ok()
        && ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))
        && ok(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at))
    {
        return Mount(at.to_owned());
    }
    panic!(
        "cannot make a small filesystem (tmpfs or loop-mounted ext4 image): the disk-full \
         test needs root; run the test suite as root (CI does)"
    );
}

fn publish(pkid: u16, qos: QoS, size: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "full/x".into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from(vec![7u8; size]),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_qos1_keeps_qos0_and_recovers() {
    let dir = TempDir::new("diskfull");
    let image = TempDir::new("diskfull-image");
    let _m = small_filesystem(dir.path(), &image.path().join("fs.img"));
    // Someone else's file takes part of the disk; deleting it later is "space returns".
    let filler = dir.path().join("other-app.log");
    std::fs::write(&filler, vec![0u8; 2 << 20]).expect("filler");
    let b = TestBroker::start_durable(dir.path(), 0, |_| {}).await;
    let (mut s, _) = RawClient::connect(b.addr, persistent_connect("hoarder", 600)).await;
    s.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            "full/#".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    }))
    .await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    let (mut live, _) = RawClient::connect(b.addr, connect_packet(Version::V5, "live")).await;
    live.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![("full/#".into(), SubscriptionOptions::default())],
    }))
    .await;
    assert!(matches!(live.recv().await, Some(Packet::SubAck(_))));

    let (mut p, _) = RawClient::connect(b.addr, connect_packet(Version::V5, "filler")).await;
    let mut refused_at = None;
    for i in 1..=400u16 {
        p.send(&publish(i, QoS::AtLeastOnce, 64 * 1024)).await;
        let Some(Packet::PubAck(a)) = p.recv().await else {
            panic!("no PUBACK")
        };
        if a.code != ReasonCode::Success && a.code != ReasonCode::NoMatchingSubscribers {
            assert_eq!(
                a.code,
                ReasonCode::UnspecifiedError,
                "a full disk is reported, not hidden"
            );
            refused_at = Some(i);
            break;
        }
    }
    let refused_at = refused_at.expect("the 6 MB disk never filled up");
    // QoS 0 still flows to connected subscribers.
    p.send(&publish(0, QoS::AtMostOnce, 10)).await;
    let got = loop {
        match live.recv().await {
            Some(Packet::Publish(m)) if m.payload.len() == 10 => break m,
            Some(_) => {}
            None => panic!("live subscriber dropped"),
        }
    };
    assert_eq!(got.qos, QoS::AtMostOnce);

    // Space returns, and the subscriber drains its queue.
    std::fs::remove_file(&filler).expect("free space");
    let (mut s, _) = RawClient::connect(b.addr, persistent_connect("hoarder", 600)).await;
    let mut drained = 0;
    while let Ok(Some(pk)) = s.recv_within(Duration::from_secs(2)).await {
        if let Packet::Publish(m) = pk {
            s.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
            drained += 1;
        }
    }
    assert!(
        drained >= usize::from(refused_at) - 1,
        "acknowledged messages were lost: {drained} < {}",
        refused_at - 1
    );
    let mut recovered = false;
    for i in 1000..1100u16 {
        p.send(&publish(i, QoS::AtLeastOnce, 1024)).await;
        let Some(Packet::PubAck(a)) = p.recv().await else {
            panic!("no PUBACK")
        };
        if !a.code.is_error() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the broker did not recover once space returned");
    b.stop().await;
}
