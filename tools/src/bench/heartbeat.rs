//! `switchboard bench --heartbeat`: the SDK's adaptive heartbeat against WeChat Mars'
//! (today's baseline, [`MarsPolicy`]) in one run.
//!
//! 1. Simulation, in virtual time (no sockets, deterministic): each carrier NAT timeout for a
//!    day, a phone switching networks, a NAT whose timeout changes; probes until settled,
//!    settled interval ÷ T, radio wake-ups per hour ÷ the optimum (3600 / T), links lost.
//!    Ours runs twice: cold (nothing known) and warm (a new device on a network where five
//!    earlier devices settled and reported to the broker's hint table, `switchboard_broker::
//!    hints`, whose hint it gets).
//! 2. Bytes on the wire while idle: the SDK idles over TCP, TLS and QUIC (MQTT PINGREQ, and
//!    over QUIC also its default QUIC-level pings; and a bare QUIC connection kept by QUIC
//!    PING frames) through a counting relay
//!    on loopback; bytes per ping exchange are measured, per-hour figures computed.

mod wire;

pub use wire::WireRow;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use switchboard_broker::hints::{HintConfig, HintTable};
use switchboard_client::heartbeat::sim::{self, CARRIER_TIMEOUTS_MIN, Costs, Outcome};
use switchboard_client::heartbeat::{
    AdaptivePolicy, HeartbeatConfig, MarsConfig, MarsPolicy, Policy,
};

/// One policy through one simulated scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SimRow {
    pub scenario: String,
    pub policy: &'static str,
    /// NAT timeout of the first network, minutes.
    pub nat_min: f64,
    pub probes_to_settle: Option<u32>,
    pub hours_to_settle: Option<f64>,
    pub settled_ratio: Option<f64>,
    pub final_ratio: f64,
    pub wakeups_vs_optimum: f64,
    pub lost_per_day: f64,
    pub probe_connections: u32,
    pub networks: u32,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub simulation: Vec<SimRow>,
    pub wire: Vec<WireRow>,
    /// Keep-alive interval of the wire measurement, and exchanges measured per transport.
    pub wire_interval_ms: u64,
    pub wire_exchanges: u32,
}

fn row(scenario: &sim::Scenario, policy: &'static str, o: &Outcome) -> SimRow {
    SimRow {
        scenario: scenario.name.clone(),
        policy,
        nat_min: scenario
            .segments
            .first()
            .map_or(0.0, |s| s.nat.as_secs_f64() / 60.0),
        probes_to_settle: o.probes_to_settle,
        hours_to_settle: o.time_to_settle.map(|t| t.as_secs_f64() / 3600.0),
        settled_ratio: o.settled_ratio,
        final_ratio: o.final_ratio,
        wakeups_vs_optimum: o.wakeups_vs_optimum,
        lost_per_day: o.lost_per_day,
        probe_connections: o.probe_connections,
        networks: o.networks,
    }
}

/// Earlier devices per network in the warm runs, and their first intervals (apps tune
/// theirs differently, so their searches, and what they prove, differ).
const EARLIER_INITIAL_S: [u64; 5] = [60, 75, 90, 105, 120];

/// The hint a new device gets on each network of `s`: earlier devices learn each network
/// cold (alone, a day at its first timeout), report what they proved to the broker's hint
/// table from one address prefix, and the table answers.
fn warm_hints(s: &sim::Scenario) -> Vec<(String, Duration)> {
    let mut table = HintTable::new(HintConfig::default());
    let now = std::time::Instant::now();
    let peer = std::net::IpAddr::from([198, 51, 100, 7]);
    let mut hints: Vec<(String, Duration)> = Vec::new();
    for seg in &s.segments {
        if hints.iter().any(|(n, _)| *n == seg.network) {
            continue;
        }
        for (i, initial) in EARLIER_INITIAL_S.iter().enumerate() {
            let mut earlier = AdaptivePolicy::new(HeartbeatConfig {
                initial: Duration::from_secs(*initial),
                ..HeartbeatConfig::default()
            });
            let alone = sim::Scenario {
                name: seg.network.clone(),
                segments: vec![sim::Segment {
                    start: Duration::ZERO,
                    network: seg.network.clone(),
                    nat: seg.nat,
                }],
                duration: Duration::from_secs(86_400),
                measure_last: Duration::from_secs(3600),
            };
            sim::run(&mut earlier, &alone, Costs::default());
            if let Some(proven) = earlier.proven() {
                let _ = table.report(now, &seg.network, peer, &format!("device-{i}"), proven);
            }
        }
        if let Ok(Some(h)) = table.hint(now, &seg.network, peer) {
            hints.push((seg.network.clone(), h));
        }
    }
    hints
}

/// Both policies through every scenario.
pub fn simulate() -> Vec<SimRow> {
    let mut rows = Vec::new();
    for s in sim::scenarios() {
        let mut mars = MarsPolicy::new(MarsConfig::default());
        let mut ours = AdaptivePolicy::new(HeartbeatConfig::default());
        let mut warm = AdaptivePolicy::new(HeartbeatConfig::default());
        for (network, hint) in warm_hints(&s) {
            warm.set_hint(&network, hint);
        }
        let mut in_band = AdaptivePolicy::new(HeartbeatConfig::default());
        in_band.set_in_band(true);
        let policies: [(&'static str, &mut dyn Policy); 4] = [
            ("mars", &mut mars),
            ("ours", &mut ours),
            ("ours-warm", &mut warm),
            ("ours-in-band", &mut in_band),
        ];
        for (name, p) in policies {
            let o = sim::run(p, &s, Costs::default());
            rows.push(row(&s, name, &o));
        }
    }
    rows
}

/// NAT timeouts in [`dense_cold`].
const DENSE: u32 = 101;

/// Probes the cold search needs over [`DENSE`] NAT timeouts spread evenly in log space
/// from 2 to 45 minutes, one simulated day each: (median, mean, min, max). The table of
/// carrier timeouts is nine points; this shows the search is not tuned to them.
fn dense_cold() -> (u32, f64, u32, u32) {
    let mut probes: Vec<u32> = (0..DENSE)
        .map(|i| {
            let t = 120.0 * 22.5f64.powf(f64::from(i) / f64::from(DENSE - 1));
            let s = sim::Scenario {
                name: format!("nat-{t:.0}s"),
                segments: vec![sim::Segment {
                    start: Duration::ZERO,
                    network: "carrier".into(),
                    nat: Duration::from_secs_f64(t),
                }],
                duration: Duration::from_secs(86_400),
                measure_last: Duration::from_secs(3600),
            };
            let mut p = AdaptivePolicy::new(HeartbeatConfig::default());
            sim::run(&mut p, &s, Costs::default())
                .probes_to_settle
                .unwrap_or(u32::MAX)
        })
        .collect();
    probes.sort_unstable();
    let mean = probes.iter().map(|&p| f64::from(p)).sum::<f64>() / probes.len() as f64;
    (
        probes[probes.len() / 2],
        mean,
        probes[0],
        probes[probes.len() - 1],
    )
}

/// Runs everything and returns the report.
pub async fn run(work: &Path) -> anyhow::Result<Report> {
    let interval = Duration::from_millis(500);
    let exchanges = 40;
    Ok(Report {
        simulation: simulate(),
        wire: wire::wire(work, interval, exchanges).await?,
        wire_interval_ms: interval.as_millis() as u64,
        wire_exchanges: exchanges,
    })
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "—".into(), |v| v.to_string())
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.2}"))
}

/// The markdown report.
pub fn markdown(r: &Report) -> String {
    let mut md = String::from(
        "### Simulation (virtual time): Mars (today's baseline) / ours cold / ours warm / ours in band\n\n\
         \"Cold\": nothing known about the network. \"Warm\": the broker's hint from five earlier \
         devices that settled there (confirmed by two probes before use). \"In band\": the fallback \
         when the broker refuses probe connections (the cold search on the link itself).\n\n\
         | scenario | probes to settle | settled ÷ T | wake-ups/h ÷ optimum | links lost / day | probe connections (cold / warm) | hours to settle (cold / warm) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let rows: Vec<[&SimRow; 4]> = r
        .simulation
        .chunks(4)
        .filter_map(|c| match c {
            [m, o, w, b] => Some([m, o, w, b]),
            _ => None,
        })
        .collect();
    let hours = |v: Option<f64>| v.map_or_else(|| "—".into(), |h| format!("{h:.1}"));
    for [m, o, w, b] in &rows {
        md.push_str(&format!(
            "| {} | {} / {} / {} / {} | {} / {} / {} / {} | {:.2} / {:.2} / {:.2} / {:.2} | {:.1} / {:.1} / {:.1} / {:.1} | {} / {} | {} / {} |\n",
            o.scenario,
            opt(m.probes_to_settle),
            opt(o.probes_to_settle),
            opt(w.probes_to_settle),
            opt(b.probes_to_settle),
            ratio(m.settled_ratio),
            ratio(o.settled_ratio),
            ratio(w.settled_ratio),
            ratio(b.settled_ratio),
            m.wakeups_vs_optimum,
            o.wakeups_vs_optimum,
            w.wakeups_vs_optimum,
            b.wakeups_vs_optimum,
            m.lost_per_day,
            o.lost_per_day,
            w.lost_per_day,
            b.lost_per_day,
            o.probe_connections,
            w.probe_connections,
            hours(o.hours_to_settle),
            hours(w.hours_to_settle),
        ));
    }
    let carrier: Vec<&[&SimRow; 4]> = rows
        .iter()
        .filter(|[_, o, _, _]| {
            CARRIER_TIMEOUTS_MIN
                .iter()
                .any(|m| o.scenario == format!("nat-{m}min"))
        })
        .collect();
    for (label, i) in [("cold", 1), ("warm", 2)] {
        let mut probes: Vec<u32> = carrier
            .iter()
            .map(|row| row[i].probes_to_settle.unwrap_or(u32::MAX))
            .collect();
        probes.sort_unstable();
        let worst_wake = carrier
            .iter()
            .map(|row| row[i].wakeups_vs_optimum)
            .fold(0.0, f64::max);
        let worst_ratio = carrier
            .iter()
            .map(|row| row[i].settled_ratio.unwrap_or(0.0))
            .fold(f64::MAX, f64::min);
        md.push_str(&format!(
            "\nOurs {label} over the carrier timeouts: median probes to settle {} (range {}–{}), \
             lowest settled ÷ T {:.2}, highest wake-ups ÷ optimum {:.2}, links lost {}.",
            probes.get(probes.len() / 2).copied().unwrap_or(0),
            probes.first().copied().unwrap_or(0),
            probes.last().copied().unwrap_or(0),
            worst_ratio,
            worst_wake,
            carrier.iter().map(|row| row[i].lost_per_day).sum::<f64>(),
        ));
    }
    let (median, mean, lo, hi) = dense_cold();
    md.push_str(&format!(
        "\nOurs cold over {DENSE} timeouts log-spaced from 2 to 45 min (not only the table's): \
         median probes to settle {median}, mean {mean:.2}, range {lo}–{hi}."
    ));
    md.push('\n');
    let pairs: Vec<(&SimRow, &SimRow)> = rows.iter().map(|[m, o, _, _]| (*m, *o)).collect();
    // Ours' settled intervals at a 5- and a 28-minute NAT: where the per-hour figures apply.
    let settled = |m: u64| {
        pairs
            .iter()
            .find(|(_, o)| o.scenario == format!("nat-{m}min"))
            .map_or(m as f64 * 60.0, |(_, o)| o.final_ratio * o.nat_min * 60.0)
    };
    let (s5, s28) = (settled(5), settled(28));
    md.push_str(&format!(
        "\n### Idle bytes per keep-alive exchange (loopback, {} ms interval, {} exchanges)\n\n\
         | transport | payload bytes (measured) | packets (measured) | on the wire (computed) | bytes/hour at {s5:.0} s (5-min NAT) | at {s28:.0} s (28-min NAT) |\n\
         |---|---|---|---|---|---|\n",
        r.wire_interval_ms, r.wire_exchanges
    ));
    for w in &r.wire {
        match &w.error {
            Some(e) => md.push_str(&format!("| {} | error: {e} | | | | |\n", w.transport)),
            None => md.push_str(&format!(
                "| {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} |\n",
                w.transport,
                w.payload_per_exchange,
                w.packets_per_exchange,
                w.wire_per_exchange,
                w.wire_per_exchange * 3600.0 / s5,
                w.wire_per_exchange * 3600.0 / s28,
            )),
        }
    }
    md
}
