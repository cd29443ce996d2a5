//! `$SYS/broker/...` topics, published retained every `sys_interval` seconds, with the
//! names mosquitto uses so existing dashboards work.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::BrokerState;
use crate::message::Message;
use crate::metrics::Metrics;

pub async fn run(b: Arc<BrokerState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(b.config.sys_interval));
    loop {
        tokio::select! {
            _ = b.shutdown.cancelled() => return,
            _ = tick.tick() => publish_all(&b),
        }
    }
}

fn publish_all(b: &BrokerState) {
    let m = &b.metrics;
    let figures: [(&str, String); 13] = [
        (
            "version",
            format!("switchboard {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "uptime",
            format!("{} seconds", b.started.elapsed().as_secs()),
        ),
        (
            "clients/connected",
            Metrics::get(&m.clients_connected).to_string(),
        ),
        ("clients/total", b.sessions.len().to_string()),
        (
            "clients/parked",
            Metrics::get(&m.connections_parked).to_string(),
        ),
        (
            "messages/received",
            Metrics::get(&m.messages_received).to_string(),
        ),
        ("messages/sent", Metrics::get(&m.messages_sent).to_string()),
        (
            "messages/dropped",
            (Metrics::get(&m.dropped_queue_full_qos0) + Metrics::get(&m.refused_queue_full))
                .to_string(),
        ),
        (
            "bytes/received",
            Metrics::get(&m.bytes_received).to_string(),
        ),
        ("bytes/sent", Metrics::get(&m.bytes_sent).to_string()),
        ("subscriptions/count", b.routes.len().to_string()),
        ("retained messages/count", b.retained.len().to_string()),
        (
            "connections/total",
            Metrics::get(&m.connections_total).to_string(),
        ),
    ];
    let store = b.store().map(|s| s.stats());
    let store_figures = store.into_iter().flat_map(|s| {
        [
            ("store/commits", s.commits.to_string()),
            ("store/ops", s.ops.to_string()),
            ("store/failed commits", s.failed_commits.to_string()),
            ("store/bytes", s.bytes.to_string()),
        ]
    });
    for (name, value) in figures.into_iter().chain(store_figures) {
        let msg = Arc::new(Message::system(
            format!("$SYS/broker/{name}"),
            Bytes::from(value),
            true,
        ));
        // `$SYS` figures are about this run: kept in memory, never stored.
        b.retained.restore(msg.clone());
        b.publish(msg);
    }
}
