//! The scenarios of the side-by-side benchmark: what each one measures.

use switchboard_proto::QoS;

use super::load::Shape;

/// What one scenario measures.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Flow {
        shape: Shape,
        pubs: usize,
        subs: usize,
        qos: QoS,
        payload: usize,
        rate: Option<u32>,
        persistent: bool,
    },
    Idle,
    ConnStorm {
        total: usize,
        concurrency: usize,
    },
    RetainedStorm {
        count: usize,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub kind: Kind,
}

pub fn scenarios() -> Vec<Scenario> {
    use Kind::*;
    let q0 = QoS::AtMostOnce;
    let q1 = QoS::AtLeastOnce;
    let q2 = QoS::ExactlyOnce;
    vec![
        Scenario {
            name: "p2p-qos0",
            about: "50 publishers → 50 subscribers, one topic each, 64 B, QoS 0, max rate",
            kind: Flow {
                shape: Shape::P2p,
                pubs: 50,
                subs: 50,
                qos: q0,
                payload: 64,
                rate: None,
                persistent: false,
            },
        },
        Scenario {
            name: "p2p-qos1",
            about: "50 → 50, 64 B, QoS 1 (window 100), max rate",
            kind: Flow {
                shape: Shape::P2p,
                pubs: 50,
                subs: 50,
                qos: q1,
                payload: 64,
                rate: None,
                persistent: false,
            },
        },
        Scenario {
            name: "p2p-qos2",
            about: "50 → 50, 64 B, QoS 2, max rate",
            kind: Flow {
                shape: Shape::P2p,
                pubs: 50,
                subs: 50,
                qos: q2,
                payload: 64,
                rate: None,
                persistent: false,
            },
        },
        Scenario {
            name: "p2p-qos0-4k",
            about: "50 → 50, 4 KiB, QoS 0, max rate",
            kind: Flow {
                shape: Shape::P2p,
                pubs: 50,
                subs: 50,
                qos: q0,
                payload: 4096,
                rate: None,
                persistent: false,
            },
        },
        Scenario {
            name: "fan-out",
            about: "2 publishers × 100 msg/s → 500 subscribers of one topic (100k deliveries/s), QoS 0",
            kind: Flow {
                shape: Shape::FanOut,
                pubs: 2,
                subs: 500,
                qos: q0,
                payload: 64,
                rate: Some(100),
                persistent: false,
            },
        },
        Scenario {
            name: "fan-in",
            about: "500 publishers × 40 msg/s → shared group of 5 subscribers (20k msg/s), QoS 1",
            kind: Flow {
                shape: Shape::FanIn,
                pubs: 500,
                subs: 5,
                qos: q1,
                payload: 64,
                rate: Some(40),
                persistent: false,
            },
        },
        Scenario {
            name: "persistent-qos1",
            about: "20 publishers → 20 persistent subscribers, QoS 1, max rate (durable acks)",
            kind: Flow {
                shape: Shape::P2p,
                pubs: 20,
                subs: 20,
                qos: q1,
                payload: 64,
                rate: None,
                persistent: true,
            },
        },
        Scenario {
            name: "retained-storm",
            about: "10,000 retained topics, then one '#' subscriber: time to receive all",
            kind: RetainedStorm { count: 10_000 },
        },
        Scenario {
            name: "conn-storm",
            about: "5,000 CONNECT/CONNACK, 50 at a time: connects per second",
            kind: ConnStorm {
                total: 5_000,
                concurrency: 50,
            },
        },
        Scenario {
            name: "idle",
            about: "N idle connections (--idle): broker memory per connection",
            kind: Idle,
        },
    ]
}
