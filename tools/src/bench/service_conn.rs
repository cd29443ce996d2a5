//! A raw MQTT 5 connection with the service credential (`$service`), for the benches'
//! admin requests (`$im/admin/...`, pipelined, answers matched by correlation data), and the
//! packet reader the benches' raw clients share.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use serde_json::Value;
use switchboard_proto::{
    Connect, Packet, Properties, Publish, QoS, Subscribe, SubscriptionOptions, Version,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one packet of `version` from `s`, buffering in `rb`.
pub(super) async fn read_packet(
    s: &mut TcpStream,
    rb: &mut BytesMut,
    version: Version,
) -> anyhow::Result<Packet> {
    loop {
        if let Some(p) = Packet::read(rb, version, usize::MAX)? {
            return Ok(p);
        }
        if s.read_buf(rb).await? == 0 {
            bail!("connection closed");
        }
    }
}

/// The service credential's admin requests, pipelined over one MQTT 5 connection.
pub(super) struct Service {
    s: TcpStream,
    rb: BytesMut,
    next: u64,
}

impl Service {
    pub(super) async fn connect(
        addr: std::net::SocketAddr,
        secret: &str,
    ) -> anyhow::Result<Service> {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut out = BytesMut::new();
        Packet::Connect(Box::new(Connect {
            version: Version::V5,
            client_id: "bench-app-server".into(),
            clean_start: true,
            keep_alive: 300,
            properties: Properties::default(),
            will: None,
            username: Some("$service".into()),
            password: Some(Bytes::from(secret.to_owned())),
        }))
        .encode(Version::V5, &mut out);
        Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Properties::default(),
            filters: vec![("bench/replies".into(), SubscriptionOptions::default())],
        })
        .encode(Version::V5, &mut out);
        s.write_all(&out).await?;
        let mut rb = BytesMut::new();
        loop {
            match read_packet(&mut s, &mut rb, Version::V5).await? {
                Packet::ConnAck(a) if a.code.is_error() => bail!("service login: {:?}", a.code),
                Packet::SubAck(_) => break,
                _ => {}
            }
        }
        Ok(Service { s, rb, next: 0 })
    }

    /// Sends every `(op, body)` and returns the answers in the same order.
    pub(super) async fn call(&mut self, ops: Vec<(String, Value)>) -> anyhow::Result<Vec<Value>> {
        let first = self.next;
        let mut out = BytesMut::new();
        for (op, body) in &ops {
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: format!("$im/admin/{op}"),
                pkid: 0,
                properties: Properties {
                    response_topic: Some("bench/replies".into()),
                    correlation_data: Some(Bytes::copy_from_slice(&self.next.to_be_bytes())),
                    ..Properties::default()
                },
                payload: Bytes::from(body.to_string()),
            })
            .encode(Version::V5, &mut out);
            self.next += 1;
        }
        self.s.write_all(&out).await?;
        let mut answers = vec![Value::Null; ops.len()];
        let mut left = ops.len();
        while left > 0 {
            let p = tokio::time::timeout(
                Duration::from_secs(30),
                read_packet(&mut self.s, &mut self.rb, Version::V5),
            )
            .await
            .context("admin answers timed out")??;
            if let Packet::Publish(p) = p {
                let id = p
                    .properties
                    .correlation_data
                    .as_deref()
                    .and_then(|c| <[u8; 8]>::try_from(c).ok())
                    .map(u64::from_be_bytes)
                    .context("answer without correlation")?;
                let v: Value = serde_json::from_slice(&p.payload)?;
                if let Some(e) = v.get("error") {
                    bail!("admin request failed: {e}");
                }
                if let Some(slot) = id
                    .checked_sub(first)
                    .and_then(|i| answers.get_mut(i as usize))
                {
                    *slot = v;
                    left -= 1;
                }
            }
        }
        Ok(answers)
    }
}
