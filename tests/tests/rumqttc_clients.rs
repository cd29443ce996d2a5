//! rumqttc's MQTT 5 and 3.1.1 clients against the broker: delivery, order, retained
//! messages, wills, persistent sessions, shared subscriptions and cross-version interop.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, Filter, LastWill, PublishProperties};
use rumqttc::{LastWill as LastWill4, QoS as Q4};
use switchboard_tests::{TestBroker, v4, v5};

#[tokio::test]
async fn v5_qos_0_1_2_delivered_in_order_per_topic() {
    let b = TestBroker::start().await;
    let mut sub = v5::Client::connect(b.port(), "sub", |_| {}).await;
    sub.client
        .subscribe("order/#", Q5::ExactlyOnce)
        .await
        .expect("subscribe");
    sub.suback().await;
    let publisher = v5::Client::connect(b.port(), "pub", |_| {}).await;
    let qos = [Q5::AtMostOnce, Q5::AtLeastOnce, Q5::ExactlyOnce];
    for i in 0..90u32 {
        publisher
            .client
            .publish("order/t", qos[(i % 3) as usize], false, i.to_string())
            .await
            .expect("publish");
    }
    for i in 0..90u32 {
        let p = sub.next_publish().await;
        assert_eq!(&p.topic[..], b"order/t");
        assert_eq!(p.payload, i.to_string(), "message {i} out of order");
        assert_eq!(
            p.qos,
            qos[(i % 3) as usize],
            "QoS is min(published, granted)"
        );
    }
}

#[tokio::test]
async fn v4_and_v5_clients_interoperate_on_the_same_topics() {
    let b = TestBroker::start().await;
    let mut s4 = v4::Client::connect(b.port(), "s4", |_| {}).await;
    s4.client
        .subscribe("mix/+", Q4::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut s5 = v5::Client::connect(b.port(), "s5", |_| {}).await;
    s5.client
        .subscribe("mix/+", Q5::AtLeastOnce)
        .await
        .expect("subscribe");
    s5.suback().await;
    loop {
        if let rumqttc::Packet::SubAck(_) = s4.next().await {
            break;
        }
    }
    let p4 = v4::Client::connect(b.port(), "p4", |_| {}).await;
    p4.client
        .publish("mix/a", Q4::AtLeastOnce, false, "from-v4")
        .await
        .expect("publish");
    let m = s5.next_publish().await;
    assert_eq!(m.payload, "from-v4");
    let m = s4.next_publish().await;
    assert_eq!(m.payload, "from-v4");

    let p5 = v5::Client::connect(b.port(), "p5", |_| {}).await;
    let props = PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    p5.client
        .publish_with_properties("mix/b", Q5::ExactlyOnce, false, "from-v5", props)
        .await
        .expect("publish");
    let m = s4.next_publish().await;
    assert_eq!(m.payload, "from-v5");
    assert_eq!(m.qos, Q4::AtLeastOnce);
    let m = s5.next_publish().await;
    assert_eq!(m.payload, "from-v5");
    let up = m.properties.expect("properties").user_properties;
    assert_eq!(
        up,
        vec![("k".to_owned(), "v".to_owned())],
        "user properties are forwarded"
    );
}

#[tokio::test]
async fn retained_message_set_served_and_cleared() {
    let b = TestBroker::start().await;
    let p = v5::Client::connect(b.port(), "p", |_| {}).await;
    p.client
        .publish("ret/a", Q5::AtLeastOnce, true, "kept")
        .await
        .expect("publish");
    // Wait until the broker has it: a subscriber sees it.
    let mut s1 = v5::Client::connect(b.port(), "s1", |_| {}).await;
    s1.client
        .subscribe("ret/#", Q5::AtLeastOnce)
        .await
        .expect("subscribe");
    let m = s1.next_publish().await;
    assert_eq!(m.payload, "kept");
    assert!(
        m.retain,
        "retained message delivered on subscribe carries RETAIN"
    );

    p.client
        .publish("ret/a", Q5::AtLeastOnce, true, "")
        .await
        .expect("clear");
    let m = s1.next_publish().await;
    assert!(
        m.payload.is_empty(),
        "the clearing message itself is forwarded"
    );
    let mut s2 = v5::Client::connect(b.port(), "s2", |_| {}).await;
    s2.client
        .subscribe("ret/#", Q5::AtLeastOnce)
        .await
        .expect("subscribe");
    s2.suback().await;
    assert!(
        s2.quiet_for(Duration::from_millis(500)).await,
        "cleared retained message must not be sent"
    );
}

#[tokio::test]
async fn v5_will_sent_on_abnormal_disconnect_only() {
    let b = TestBroker::start().await;
    let mut watcher = v5::Client::connect(b.port(), "watcher", |_| {}).await;
    watcher
        .client
        .subscribe("wills/#", Q5::AtLeastOnce)
        .await
        .expect("subscribe");
    watcher.suback().await;

    let will = |t: &str| LastWill::new(t, "gone", Q5::AtLeastOnce, false, None);
    let polite = v5::Client::connect(b.port(), "polite", |o| {
        o.set_last_will(will("wills/polite"));
    })
    .await;
    polite.client.disconnect().await.expect("disconnect");
    let crashing = v5::Client::connect(b.port(), "crashing", |o| {
        o.set_last_will(will("wills/crashing"));
    })
    .await;
    crashing.kill();
    let m = watcher.next_publish().await;
    assert_eq!(
        &m.topic[..],
        b"wills/crashing",
        "only the abnormal disconnect sends its will"
    );
}

#[tokio::test]
async fn v4_will_sent_on_abnormal_disconnect() {
    let b = TestBroker::start().await;
    let mut watcher = v4::Client::connect(b.port(), "watcher4", |_| {}).await;
    watcher
        .client
        .subscribe("w4/#", Q4::AtLeastOnce)
        .await
        .expect("subscribe");
    let c = v4::Client::connect(b.port(), "dying4", |o| {
        o.set_last_will(LastWill4::new("w4/dying", "bye", Q4::AtLeastOnce, false));
    })
    .await;
    c.kill();
    let m = watcher.next_publish().await;
    assert_eq!(m.topic, "w4/dying");
    assert_eq!(m.payload, "bye");
}

#[tokio::test]
async fn v5_persistent_session_receives_what_was_queued_while_offline() {
    let b = TestBroker::start().await;
    let persistent = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false);
        let props = ConnectProperties {
            session_expiry_interval: Some(300),
            ..Default::default()
        };
        o.set_connect_properties(props);
    };
    let mut s = v5::Client::connect(b.port(), "persist5", persistent).await;
    s.client
        .subscribe("queue/#", Q5::AtLeastOnce)
        .await
        .expect("subscribe");
    s.suback().await;
    s.client.disconnect().await.expect("disconnect");
    b.until_offline("persist5").await;

    let p = v5::Client::connect(b.port(), "pub5", |_| {}).await;
    for i in 0..20 {
        p.client
            .publish("queue/x", Q5::AtLeastOnce, false, format!("m{i}"))
            .await
            .expect("publish");
    }
    p.client
        .publish("queue/x", Q5::AtLeastOnce, false, "end")
        .await
        .expect("publish");
    // Wait for the last PUBACK so that everything is queued.
    let mut p = p;
    let mut acks = 0;
    while acks < 21 {
        if let rumqttc::v5::mqttbytes::v5::Packet::PubAck(_) = p.next().await {
            acks += 1;
        }
    }
    let mut s = v5::Client::connect(b.port(), "persist5", persistent).await;
    for i in 0..20 {
        assert_eq!(s.next_publish().await.payload, format!("m{i}"));
    }
    assert_eq!(s.next_publish().await.payload, "end");
}

#[tokio::test]
async fn v4_persistent_session_resumes_with_clean_session_false() {
    let b = TestBroker::start().await;
    let mut s = v4::Client::connect(b.port(), "persist4", |o| {
        o.set_clean_session(false);
    })
    .await;
    s.client
        .subscribe("q4/#", Q4::ExactlyOnce)
        .await
        .expect("subscribe");
    loop {
        if let rumqttc::Packet::SubAck(_) = s.next().await {
            break;
        }
    }
    s.client.disconnect().await.expect("disconnect");
    b.until_offline("persist4").await;
    let mut p = v4::Client::connect(b.port(), "pub4", |_| {}).await;
    p.client
        .publish("q4/x", Q4::ExactlyOnce, false, "while-away")
        .await
        .expect("publish");
    loop {
        if let rumqttc::Packet::PubComp(_) = p.next().await {
            break;
        }
    }
    let mut s = v4::Client::connect(b.port(), "persist4", |o| {
        o.set_clean_session(false);
    })
    .await;
    let m = s.next_publish().await;
    assert_eq!(m.payload, "while-away");
    assert_eq!(m.qos, Q4::ExactlyOnce);
}

#[tokio::test]
async fn shared_subscription_splits_messages_and_moves_to_remaining_member() {
    let b = TestBroker::start().await;
    let mut m1 = v5::Client::connect(b.port(), "m1", |_| {}).await;
    let mut m2 = v5::Client::connect(b.port(), "m2", |_| {}).await;
    for m in [&mut m1, &mut m2] {
        m.client
            .subscribe("$share/workers/jobs/+", Q5::AtLeastOnce)
            .await
            .expect("subscribe");
        m.suback().await;
    }
    let p = v5::Client::connect(b.port(), "jobs-pub", |_| {}).await;
    for i in 0..10 {
        p.client
            .publish("jobs/a", Q5::AtLeastOnce, false, format!("j{i}"))
            .await
            .expect("publish");
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(String::from_utf8_lossy(&m1.next_publish().await.payload).into_owned());
        got.push(String::from_utf8_lossy(&m2.next_publish().await.payload).into_owned());
    }
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("j{i}")).collect();
    want.sort();
    assert_eq!(
        got, want,
        "each job goes to exactly one member, round robin"
    );

    m2.client.disconnect().await.expect("disconnect");
    b.until_offline("m2").await;
    for i in 10..14 {
        p.client
            .publish("jobs/a", Q5::AtLeastOnce, false, format!("j{i}"))
            .await
            .expect("publish");
    }
    for i in 10..14 {
        assert_eq!(
            m1.next_publish().await.payload,
            format!("j{i}"),
            "the remaining member gets everything"
        );
    }
}

#[tokio::test]
async fn subscribe_options_no_local_and_retain_as_published() {
    let b = TestBroker::start().await;
    let mut c = v5::Client::connect(b.port(), "self", |_| {}).await;
    let mut f = Filter::new("loop/t", Q5::AtLeastOnce);
    f.nolocal = true;
    c.client.subscribe_many(vec![f]).await.expect("subscribe");
    c.suback().await;
    let mut f = Filter::new("loop/#", Q5::AtLeastOnce);
    f.preserve_retain = true;
    let mut other = v5::Client::connect(b.port(), "other", |_| {}).await;
    other
        .client
        .subscribe_many(vec![f])
        .await
        .expect("subscribe");
    other.suback().await;
    c.client
        .publish("loop/t", Q5::AtLeastOnce, true, "mine")
        .await
        .expect("publish");
    let m = other.next_publish().await;
    assert!(
        m.retain,
        "retain as published keeps RETAIN on forwarded messages"
    );
    assert!(
        c.quiet_for(Duration::from_millis(500)).await,
        "no local: own message not echoed"
    );
}
