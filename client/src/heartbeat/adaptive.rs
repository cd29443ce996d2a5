//! The SDK's heartbeat: learn each network's NAT idle timeout without losing the link.
//!
//! The link only ever idles for an interval a probe has proved (a margin under the longest
//! success). Longer intervals are tried on a separate probe connection: it connects, stays
//! idle for the candidate interval, pings and waits [`HeartbeatConfig::probe_timeout`] for
//! the answer. The candidates bisect in log space between the longest success and the
//! shortest failure (before the first failure: the ceiling [`HeartbeatConfig::max`]), from
//! the first probe on, splitting so that the search needs as few probes as the bracket
//! allows (see `AdaptivePolicy::split`), and settle when the two are within
//! [`HeartbeatConfig::precision`] of each other. A failed probe therefore costs a
//! probe connection and a few seconds of waiting, never the link.
//!
//! NATs change: once settled under a failure, the failure is probed again after
//! [`HeartbeatConfig::reprobe_after`] and learning resumes upward if it now passes; a link
//! lost at the settled interval (the timeout went down) halves the interval and bisects
//! again. What was learned is kept per network ([`AdaptivePolicy::set_network`]) and can be
//! saved and restored across app restarts ([`AdaptivePolicy::learned`],
//! [`AdaptivePolicy::restore`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Phase, Policy};

/// Tuning of the adaptive heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// The link's interval on a network not learned yet: under the shortest carrier NAT
    /// timeouts (2 minutes), so a new network costs no lost link.
    pub initial: Duration,
    /// Never ping more often than this, even after losses.
    pub min: Duration,
    /// Never idle longer than this (keep it within the broker's maximum keep-alive).
    pub max: Duration,
    /// After a lost link, or a failure at an interval proved before (the NAT got
    /// stricter), the search starts again from the failure ÷ this factor.
    pub growth: f64,
    /// Settle once the shortest failure is within this factor of the longest success. With
    /// `margin`, it bounds the settled interval: ≥ (1 − margin) ÷ precision × T (0.904 T
    /// with the defaults, the issue asking for 0.9 T).
    pub precision: f64,
    /// The link idles this fraction under the longest success (NAT timers are not exact:
    /// 1 % is 1.2 s at 2 minutes, 27 s at 45).
    pub margin: f64,
    /// How long a probe's ping waits for its answer before the probe counts as failed.
    pub probe_timeout: Duration,
    /// Once settled under a failure, probe that failure again after this long.
    pub reprobe_after: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            initial: Duration::from_secs(90),
            min: Duration::from_secs(30),
            max: Duration::from_secs(60 * 60),
            growth: 2.0,
            precision: 1.095,
            margin: 0.01,
            probe_timeout: Duration::from_secs(5),
            reprobe_after: Duration::from_secs(6 * 3600),
        }
    }
}

/// What is known about one network.
#[derive(Debug, Clone)]
struct Net {
    /// Longest idle interval known to work (assumed for a new network).
    safe: Duration,
    /// Shortest idle interval known to fail.
    fail: Option<Duration>,
    settled: bool,
    /// When to probe `fail` again, once settled.
    reprobe_at: Option<Instant>,
    /// Re-probes that failed in a row: each doubles the wait before the next (up to 16×).
    reprobes_failed: u32,
    /// Links lost to in-band probes since this network was (re)learned.
    in_band_losses: u32,
    probes: u32,
    /// What earlier devices proved on this network (the broker's hint), not confirmed yet.
    hint: Option<Duration>,
}

/// The adaptive heartbeat policy (see the module documentation).
#[derive(Debug, Clone)]
pub struct AdaptivePolicy {
    cfg: HeartbeatConfig,
    network: String,
    nets: HashMap<String, Net>,
    /// Probe on the link itself (see [`AdaptivePolicy::set_in_band`]).
    in_band: bool,
    /// The longest interval used: [`HeartbeatConfig::max`], or the broker's maximum
    /// keep-alive when smaller ([`AdaptivePolicy::set_ceiling`]).
    ceiling: Duration,
}

/// In-band probing settles after this many lost links on a network.
const IN_BAND_LOSSES: u32 = 2;

impl AdaptivePolicy {
    pub fn new(cfg: HeartbeatConfig) -> Self {
        let mut p = AdaptivePolicy {
            network: String::from("default"),
            nets: HashMap::new(),
            in_band: false,
            ceiling: cfg.max.max(cfg.min),
            cfg,
        };
        p.nets.insert(p.network.clone(), p.fresh());
        p
    }

    pub fn config(&self) -> &HeartbeatConfig {
        &self.cfg
    }

    /// The broker's maximum keep-alive (announced in CONNACK): the search never goes
    /// above it (nor above [`HeartbeatConfig::max`]), and what was learned above it is
    /// brought down to it. Each broker announces its own, so a call replaces the last.
    pub fn set_ceiling(&mut self, broker_max: Duration) {
        self.ceiling = self.cfg.max.min(broker_max).max(self.cfg.min);
        let ceiling = self.ceiling;
        for n in self.nets.values_mut() {
            if n.safe > ceiling {
                n.safe = ceiling;
            }
        }
    }

    /// The longest interval the search goes to now.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// Probes on the link itself instead of on probe connections: for servers that refuse
    /// probe connections (an IM login that a second connection would sign out, say). The
    /// same search, but the link idles for each candidate, so a failed probe costs the link;
    /// a network settles at its longest success after [`IN_BAND_LOSSES`] such losses, and
    /// there is no upward re-probe.
    pub fn set_in_band(&mut self, on: bool) {
        self.in_band = on;
    }

    pub fn in_band(&self) -> bool {
        self.in_band
    }

    /// The next interval to try on `n`, while it is not settled.
    ///
    /// With a hint `h` (earlier devices proved `h`, and their search stopped within
    /// `precision` of their first failure, so the timeout is likely in (h, h·precision]),
    /// two probes confirm it: h·√precision, then h·precision if that passed (a failure
    /// settles within √precision) or h if it failed (a success settles within
    /// √precision). Anything else means the hint was stale: the cold search goes on from
    /// what the probes proved.
    fn candidate(&self, n: &Net) -> Option<Duration> {
        if n.settled {
            return None;
        }
        if let Some(h) = n.hint {
            let mid = h.mul_f64(self.cfg.precision.sqrt());
            let top = h.mul_f64(self.cfg.precision);
            let next = match n.fail {
                None if n.safe < mid => Some(mid),
                None if n.safe < top => Some(top),
                Some(f) if f <= mid && f > h && n.safe < h => Some(h),
                _ => None,
            };
            if let Some(next) = next {
                return Some(next.min(self.ceiling));
            }
        }
        Some(self.split(n).min(self.ceiling))
    }

    /// The cold search's next probe: bisection in log space between the longest success
    /// and the shortest failure (before any failure: the ceiling × precision, since a
    /// success at the ceiling settles). The bracket holds `cells` = log(hi / lo) /
    /// log(precision) cells; telling them apart takes k = ⌈log₂ cells⌉ probes, and when
    /// cells < 2^k, 2^k − cells of them can be told apart with one probe fewer. The split
    /// gives the upper part max(cells − 2^(k−1), 2^(k−2)) cells, so those shallower
    /// cells sit at the long intervals: over a log-uniform T that is the fewest probes on
    /// average (5.5 vs 5.6 with them at the short end; bench/README.md), and the probes
    /// saved are the longest ones.
    fn split(&self, n: &Net) -> Duration {
        if self.in_band && n.fail.is_none() {
            // On the link, a failed probe costs the link: grow from what works instead of
            // jumping to the middle of the range (the in-band search settles after two
            // losses, so it must not spend them far above T).
            return n.safe.mul_f64(self.cfg.growth);
        }
        let p = self.cfg.precision.max(1.001);
        let lo = n.safe.as_secs_f64();
        let hi = n
            .fail
            .map_or(self.ceiling.as_secs_f64() * p, |f| f.as_secs_f64());
        let cells = (hi / lo).ln() / p.ln();
        if !cells.is_finite() || cells <= 2.0 {
            return Duration::from_secs_f64((lo * hi).max(0.0).sqrt());
        }
        let k = (cells.log2() - 1e-9).ceil();
        let upper = (cells - 2f64.powf(k - 1.0)).max(2f64.powf(k - 2.0));
        Duration::from_secs_f64(lo * p.powf(cells - upper))
    }

    /// The network in use.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Whether a hint would help on the network in use: nothing learned there yet (no
    /// probe made, not settled, not probing in band).
    pub fn wants_hint(&self) -> bool {
        let n = self.net();
        !self.in_band && !n.settled && n.probes == 0 && n.fail.is_none()
    }

    /// Starts the search on `network` from `hint`, the interval earlier devices proved
    /// there (the broker's aggregate): it is confirmed with two probes before the link
    /// uses it, and a wrong hint only costs probes. Ignored once learning has begun there.
    pub fn set_hint(&mut self, network: &str, hint: Duration) {
        let (min, max) = (self.cfg.min, self.ceiling);
        let fresh = self.fresh();
        let n = self.nets.entry(network.to_owned()).or_insert(fresh);
        if !n.settled && n.probes == 0 && n.fail.is_none() && !self.in_band {
            n.hint = Some(hint.clamp(min, max));
        }
    }

    /// The interval proved on the network in use, once settled there by probes made in
    /// this run (not restored): what a device reports to the broker's hint table.
    pub fn proven(&self) -> Option<Duration> {
        let n = self.net();
        (n.settled && n.probes > 0).then_some(n.safe)
    }

    /// The longest idle interval proved on each network where learning settled, to save
    /// across restarts and give back to [`AdaptivePolicy::restore`].
    pub fn learned(&self) -> Vec<(String, Duration)> {
        let mut v: Vec<(String, Duration)> = self
            .nets
            .iter()
            .filter(|(_, n)| n.settled)
            .map(|(k, n)| (k.clone(), n.safe))
            .collect();
        v.sort();
        v
    }

    /// Seeds a network with an interval learned earlier (as returned by
    /// [`AdaptivePolicy::learned`]): it starts settled there, a loss relearns, and the
    /// upward re-probe checks just above it after [`HeartbeatConfig::reprobe_after`].
    pub fn restore(&mut self, network: &str, proven: Duration) {
        let safe = proven.clamp(self.cfg.min, self.ceiling);
        let above = safe.mul_f64(self.cfg.precision);
        self.nets.insert(
            network.to_owned(),
            Net {
                safe,
                fail: (safe < self.ceiling).then_some(above),
                settled: true,
                reprobe_at: None,
                reprobes_failed: 0,
                in_band_losses: 0,
                probes: 0,
                hint: None,
            },
        );
    }

    fn fresh(&self) -> Net {
        Net {
            safe: self.cfg.initial.clamp(self.cfg.min, self.ceiling),
            fail: None,
            settled: false,
            reprobe_at: None,
            reprobes_failed: 0,
            in_band_losses: 0,
            probes: 0,
            hint: None,
        }
    }

    fn net(&self) -> &Net {
        // Invariant: the current network always has an entry (inserted by `new` and
        // `set_network`).
        self.nets
            .get(&self.network)
            .unwrap_or_else(|| unreachable!())
    }

    fn net_mut(&mut self) -> &mut Net {
        let fresh = self.fresh();
        self.nets.entry(self.network.clone()).or_insert(fresh)
    }

    fn link_interval(&self, n: &Net) -> Duration {
        n.safe.mul_f64(1.0 - self.cfg.margin).max(self.cfg.min)
    }

    /// Settles when the search is done: the ceiling was reached, or success and failure
    /// are within the precision.
    fn check_settled(&mut self, now: Instant) {
        let (max, precision, reprobe) = (self.ceiling, self.cfg.precision, self.cfg.reprobe_after);
        let n = self.net_mut();
        if n.settled {
            return;
        }
        let bracketed = n
            .fail
            // (1 + 1e-6): intervals are whole nanoseconds, the bisection's points are not.
            .is_some_and(|f| f.as_secs_f64() <= n.safe.as_secs_f64() * precision * (1.0 + 1e-6));
        if n.safe >= max || bracketed {
            n.settled = true;
            n.reprobe_at = n.fail.map(|_| now + reprobe);
        }
    }
}

impl Policy for AdaptivePolicy {
    fn interval(&self) -> Duration {
        let n = self.net();
        match self.candidate(n) {
            Some(c) if self.in_band => c,
            _ => self.link_interval(n),
        }
    }

    fn phase(&self) -> Phase {
        if self.net().settled {
            Phase::Settled
        } else {
            Phase::Probing
        }
    }

    fn probes(&self) -> u32 {
        self.net().probes
    }

    fn next_probe(&mut self, now: Instant) -> Option<Duration> {
        self.check_settled(now);
        if self.in_band {
            return None;
        }
        let n = self.net();
        if n.settled {
            // Re-probe the failure upward now and then: the NAT may have become kinder.
            let reprobe = self.cfg.reprobe_after;
            return match (n.fail, n.reprobe_at) {
                (Some(f), Some(at)) if now >= at => Some(f),
                (Some(_), None) => {
                    // Restored from an earlier run: the clock starts now.
                    self.net_mut().reprobe_at = Some(now + reprobe);
                    None
                }
                _ => None,
            };
        }
        self.candidate(n)
    }

    fn on_probe(&mut self, now: Instant, idle: Duration, ok: bool) -> Option<Duration> {
        let before = self.interval();
        let (min, growth, reprobe) = (self.cfg.min, self.cfg.growth, self.cfg.reprobe_after);
        let n = self.net_mut();
        n.probes += 1;
        if ok {
            n.safe = n.safe.max(idle);
            if n.fail.is_some_and(|f| idle >= f) {
                // The NAT now keeps mappings longer than it did: learn upward again.
                n.fail = None;
                n.settled = false;
                n.reprobe_at = None;
                n.reprobes_failed = 0;
            }
        } else {
            n.fail = Some(n.fail.map_or(idle, |f| f.min(idle)));
            if idle <= n.safe {
                // What was proved no longer holds: the NAT got stricter.
                n.safe = idle.div_f64(growth).max(min);
                n.settled = false;
            }
            if n.settled {
                // A re-probe failed: nothing changed, try again later, and less often.
                n.reprobes_failed = (n.reprobes_failed + 1).min(4);
                n.reprobe_at = Some(now + reprobe * (1 << n.reprobes_failed));
            }
        }
        self.check_settled(now);
        let after = self.interval();
        (after != before).then_some(after)
    }

    fn on_pong(&mut self, now: Instant) -> Option<Duration> {
        match self.candidate(self.net()) {
            Some(c) if self.in_band => self.on_probe(now, c, true),
            _ => None,
        }
    }

    fn on_lost(&mut self, now: Instant) -> Duration {
        if self.in_band
            && let Some(c) = self.candidate(self.net())
        {
            // An in-band probe failed.
            self.on_probe(now, c, false);
            let n = self.net_mut();
            n.in_band_losses += 1;
            if n.in_band_losses >= IN_BAND_LOSSES && !n.settled {
                n.settled = true;
            }
            return self.interval();
        }
        let lost_at = self.interval();
        let (min, growth) = (self.cfg.min, self.cfg.growth);
        let n = self.net_mut();
        n.fail = Some(n.fail.map_or(lost_at, |f| f.min(lost_at)));
        n.safe = lost_at.div_f64(growth).max(min);
        n.settled = false;
        n.reprobe_at = None;
        n.reprobes_failed = 0;
        n.in_band_losses = 0;
        n.hint = None;
        self.interval()
    }

    fn set_network(&mut self, _now: Instant, name: &str) {
        if name != self.network {
            self.network = name.to_owned();
            self.net_mut();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Probes against a NAT forgetting after `nat` until settled; returns the interval.
    fn learn(p: &mut AdaptivePolicy, now: &mut Instant, nat: Duration) -> Duration {
        for _ in 0..40 {
            let Some(idle) = p.next_probe(*now) else {
                break;
            };
            *now += idle;
            p.on_probe(*now, idle, idle < nat);
        }
        p.interval()
    }

    #[test]
    fn settles_within_ten_percent_under_the_nat_timeout() {
        for min in [2u64, 3, 5, 7, 10, 15, 20, 28, 45] {
            let nat = secs(min * 60);
            let mut now = Instant::now();
            let mut p = AdaptivePolicy::new(HeartbeatConfig::default());
            let settled = learn(&mut p, &mut now, nat);
            assert_eq!(p.phase(), Phase::Settled, "{min} min");
            assert!(settled < nat, "{min} min: {settled:?}");
            assert!(
                settled.as_secs_f64() >= 0.9 * nat.as_secs_f64(),
                "{min} min: {settled:?}"
            );
        }
    }

    #[test]
    fn the_ceiling_settles_without_a_failure() {
        let mut now = Instant::now();
        let mut p = AdaptivePolicy::new(HeartbeatConfig::default());
        learn(&mut p, &mut now, secs(24 * 3600));
        assert_eq!(p.phase(), Phase::Settled);
        assert_eq!(
            p.next_probe(now),
            None,
            "nothing to re-probe at the ceiling"
        );
    }

    #[test]
    fn the_brokers_max_keep_alive_caps_the_search() {
        let mut now = Instant::now();
        let mut p = AdaptivePolicy::new(HeartbeatConfig::default());
        p.set_ceiling(secs(20 * 60));
        let mut tried = Vec::new();
        while let Some(idle) = p.next_probe(now) {
            tried.push(idle);
            now += idle;
            p.on_probe(now, idle, idle < secs(45 * 60));
        }
        assert!(tried.iter().all(|t| *t <= secs(1200)), "{tried:?}");
        assert_eq!(p.phase(), Phase::Settled);
        assert_eq!(p.interval(), secs(1200).mul_f64(0.99));
        // A broker with a larger cap (or none) does not raise it above the SDK's own.
        p.set_ceiling(secs(65_535));
        assert_eq!(p.ceiling(), p.config().max);
    }

    #[test]
    fn a_network_switch_resumes_what_was_learned_there() {
        let mut now = Instant::now();
        let mut p = AdaptivePolicy::new(HeartbeatConfig::default());
        let wifi = learn(&mut p, &mut now, secs(20 * 60));
        p.set_network(now, "cellular");
        assert_eq!(p.phase(), Phase::Probing);
        assert_eq!(p.interval(), secs(90).mul_f64(0.99));
        let cell = learn(&mut p, &mut now, secs(5 * 60));
        p.set_network(now, "default");
        assert_eq!((p.interval(), p.phase()), (wifi, Phase::Settled));
        p.set_network(now, "cellular");
        assert_eq!((p.interval(), p.phase()), (cell, Phase::Settled));
        let saved = p.learned();
        let mut q = AdaptivePolicy::new(HeartbeatConfig::default());
        for (n, d) in &saved {
            q.restore(n, *d);
        }
        q.set_network(now, "cellular");
        assert_eq!(q.interval(), cell);
    }

    #[test]
    fn a_lost_link_halves_and_relearns_and_a_reprobe_learns_upward() {
        let mut now = Instant::now();
        let mut p = AdaptivePolicy::new(HeartbeatConfig::default());
        let ten = learn(&mut p, &mut now, secs(600));
        // The NAT drops to 5 minutes: the link is lost once, then bisection relearns.
        assert_eq!(p.on_lost(now), ten.div_f64(2.0).mul_f64(0.99));
        let five = learn(&mut p, &mut now, secs(300));
        assert!(five < secs(300) && five.as_secs_f64() >= 270.0, "{five:?}");
        // Later it grows to 20 minutes: the re-probe notices and learning goes upward.
        assert_eq!(p.next_probe(now), None, "not yet");
        now += p.config().reprobe_after;
        learn(&mut p, &mut now, secs(1200));
        assert!(p.interval().as_secs_f64() >= 1080.0, "{:?}", p.interval());
    }

    #[test]
    fn a_hint_from_earlier_devices_settles_in_two_probes_and_a_wrong_one_costs_only_probes() {
        for min in [2u64, 3, 5, 7, 10, 15, 20, 28, 45] {
            let nat = secs(min * 60);
            let mut now = Instant::now();
            let mut earlier = AdaptivePolicy::new(HeartbeatConfig::default());
            learn(&mut earlier, &mut now, nat);
            let Some(proven) = earlier.proven() else {
                panic!("{min} min: not settled")
            };
            let mut p = AdaptivePolicy::new(HeartbeatConfig::default());
            assert!(p.wants_hint());
            p.set_hint("default", proven);
            let settled = learn(&mut p, &mut now, nat);
            assert_eq!((p.phase(), p.probes()), (Phase::Settled, 2), "{min} min");
            assert!(settled < nat, "{min} min: {settled:?}");
            assert!(
                settled.as_secs_f64() >= 0.93 * nat.as_secs_f64(),
                "{min} min"
            );
        }
        // Hints that lie (far too long, far too short) still settle under the timeout.
        for hint in [secs(3 * 3600), secs(31), secs(200)] {
            let nat = secs(300);
            let mut now = Instant::now();
            let mut p = AdaptivePolicy::new(HeartbeatConfig::default());
            p.set_hint("default", hint);
            let settled = learn(&mut p, &mut now, nat);
            assert_eq!(p.phase(), Phase::Settled, "{hint:?}");
            assert!(
                settled < nat && settled.as_secs_f64() >= 0.9 * 300.0,
                "{hint:?}: {settled:?}"
            );
        }
    }
}
