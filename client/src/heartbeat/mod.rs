//! The heartbeat: how long the connection may stay idle before the client pings.
//!
//! A phone's connection dies silently when a NAT or carrier gateway forgets an idle mapping
//! (2 minutes on some networks, 45 on others). Pinging often keeps it alive but wakes the
//! radio; pinging too rarely loses the link, and every lost link costs a reconnect, a TLS
//! handshake and a sync. A [`Policy`] learns the longest safe interval per network. It is a
//! pure state machine: time is an input (`now`), outcomes are pushed in, intervals pulled out.
//!
//! - [`AdaptivePolicy`] (the SDK's): the connection only ever idles for intervals a probe
//!   proved; longer intervals are probed on a separate, disposable probe connection
//!   (geometric growth, then bisection between the longest success and the shortest
//!   failure), so a failed probe costs a probe connection and a few seconds, never the link.
//! - [`MarsPolicy`]: WeChat Mars' additive search on the link itself, kept as the baseline.
//! - [`sim`]: both policies against simulated NATs in virtual time (the benchmark and the
//!   convergence tests).

mod adaptive;
mod mars;
pub mod sim;

use std::time::{Duration, Instant};

pub use adaptive::{AdaptivePolicy, HeartbeatConfig};
pub use mars::{MarsConfig, MarsPolicy};

/// The SDK's heartbeat.
pub type Heartbeat = AdaptivePolicy;

/// The id a network is declared under (`$control/network`, `$control/settled`): a hash of
/// the app's name for it, so that a Wi-Fi SSID never leaves the device.
pub fn network_id(name: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut id = String::from("n-");
    for b in &digest.as_ref()[..8] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// Where the search stands on the current network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Still looking for the longest safe interval.
    Probing,
    /// Found it (an occasional re-probe upward may follow).
    Settled,
}

/// A heartbeat policy. The link pings after [`Policy::interval`] of idleness; a policy that
/// probes out of band hands out probe intervals with [`Policy::next_probe`] (one at a time:
/// the caller reports each with [`Policy::on_probe`] before asking again).
pub trait Policy {
    /// Idle time after which the link sends a ping.
    fn interval(&self) -> Duration;

    fn phase(&self) -> Phase;

    /// Probes made on the current network since it was joined (for Mars: pings while
    /// probing).
    fn probes(&self) -> u32;

    /// An idle interval to try on a probe connection now, if there is one to learn.
    fn next_probe(&mut self, now: Instant) -> Option<Duration>;

    /// A probe connection idled for `idle` and its ping was answered (`ok`) or not. Returns
    /// the link's new interval when it changed (to announce to the broker).
    fn on_probe(&mut self, now: Instant, idle: Duration, ok: bool) -> Option<Duration>;

    /// A ping of the link, after [`Policy::interval`] of idleness, was answered. Returns the
    /// new interval when it changed.
    fn on_pong(&mut self, now: Instant) -> Option<Duration>;

    /// The link's ping went unanswered (the mapping was forgotten): the link is lost. Returns
    /// the interval to use from now on.
    fn on_lost(&mut self, now: Instant) -> Duration;

    /// The device moved to another network (a Wi-Fi SSID, a carrier): resume what was
    /// learned there, or start learning.
    fn set_network(&mut self, now: Instant, name: &str);
}
