//! WeChat Mars' heartbeat, kept as the baseline the adaptive policy is measured against
//! (`switchboard bench --heartbeat`): start at a safe interval, lengthen it by a step after
//! every ping that came back, and when a ping is lost in a way that looks like a NAT
//! timeout, settle just under the longest interval that worked (last success minus a
//! margin). It probes on the connection itself, so every failed probe is a lost link.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Phase, Policy};

/// Tuning of the heartbeat (defaults: Mars' 3.5 min to 10 min in 60 s steps, settling
/// 20 s under the last success).
#[derive(Debug, Clone)]
pub struct MarsConfig {
    pub min: Duration,
    pub max: Duration,
    pub step: Duration,
    /// How far under the last successful interval to settle.
    pub margin: Duration,
}

impl Default for MarsConfig {
    fn default() -> Self {
        MarsConfig {
            min: Duration::from_secs(210),
            max: Duration::from_secs(600),
            step: Duration::from_secs(60),
            margin: Duration::from_secs(20),
        }
    }
}

/// The heartbeat state for the current network, plus what was learned on others.
#[derive(Debug, Clone)]
pub struct MarsPolicy {
    cfg: MarsConfig,
    current: Duration,
    last_ok: Option<Duration>,
    phase: Phase,
    network: String,
    learned: HashMap<String, Duration>,
    probes: u32,
}

impl MarsPolicy {
    pub fn new(cfg: MarsConfig) -> Self {
        MarsPolicy {
            current: cfg.min,
            cfg,
            last_ok: None,
            phase: Phase::Probing,
            network: String::from("default"),
            learned: HashMap::new(),
            probes: 0,
        }
    }

    /// Idle time after which to send PINGREQ.
    pub fn interval(&self) -> Duration {
        self.current
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Probes (pings) sent on this network since it was last joined.
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// A ping after `interval()` of idleness was answered. Returns the new interval if it
    /// changed (to announce to the broker).
    pub fn on_pong(&mut self) -> Option<Duration> {
        self.probes += 1;
        self.last_ok = Some(self.current);
        if self.phase == Phase::Settled {
            return None;
        }
        let next = (self.current + self.cfg.step).min(self.cfg.max);
        if next == self.current {
            // Reached the maximum: nothing more to learn here.
            self.settle(next);
            return None;
        }
        self.current = next;
        Some(next)
    }

    /// A ping after `interval()` of idleness went unanswered, or the link died while idle:
    /// the mapping was forgotten. Returns the interval to use from now on.
    pub fn on_timeout(&mut self) -> Duration {
        self.probes += 1;
        let settle = match self.last_ok {
            Some(ok) => ok.saturating_sub(self.cfg.margin).max(self.cfg.min),
            // Even the first, shortest probe failed: stay at the minimum.
            None => self.cfg.min,
        };
        self.settle(settle);
        settle
    }

    fn settle(&mut self, d: Duration) {
        self.current = d;
        self.phase = Phase::Settled;
        self.learned.insert(self.network.clone(), d);
    }

    /// Switches to another network (Wi-Fi, a carrier...): resumes what was learned there, or
    /// starts probing from the minimum.
    pub fn set_network(&mut self, name: &str) {
        if name == self.network {
            return;
        }
        self.network = name.to_owned();
        self.probes = 0;
        match self.learned.get(name) {
            Some(&d) => {
                self.current = d;
                self.last_ok = Some(d);
                self.phase = Phase::Settled;
            }
            None => {
                self.current = self.cfg.min;
                self.last_ok = None;
                self.phase = Phase::Probing;
            }
        }
    }

    /// What was learned per network.
    pub fn learned(&self) -> &HashMap<String, Duration> {
        &self.learned
    }
}

impl Policy for MarsPolicy {
    fn interval(&self) -> Duration {
        MarsPolicy::interval(self)
    }

    fn phase(&self) -> Phase {
        MarsPolicy::phase(self)
    }

    fn probes(&self) -> u32 {
        MarsPolicy::probes(self)
    }

    fn next_probe(&mut self, _now: Instant) -> Option<Duration> {
        None
    }

    fn on_probe(&mut self, _now: Instant, _idle: Duration, _ok: bool) -> Option<Duration> {
        None
    }

    fn on_pong(&mut self, _now: Instant) -> Option<Duration> {
        MarsPolicy::on_pong(self)
    }

    fn on_lost(&mut self, _now: Instant) -> Duration {
        self.on_timeout()
    }

    fn set_network(&mut self, _now: Instant, name: &str) {
        MarsPolicy::set_network(self, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Simulates a NAT that forgets after `nat` seconds idle.
    fn converge(nat: Duration, cfg: MarsConfig) -> (Duration, u32) {
        let mut hb = MarsPolicy::new(cfg);
        for _ in 0..100 {
            if hb.phase() == Phase::Settled {
                break;
            }
            if hb.interval() < nat {
                hb.on_pong();
            } else {
                hb.on_timeout();
            }
        }
        (hb.interval(), hb.probes())
    }

    #[test]
    fn converges_just_under_the_nat_timeout_with_mars_defaults() {
        for nat_min in [5u64, 7, 9] {
            let nat = secs(nat_min * 60);
            let (settled, probes) = converge(nat, MarsConfig::default());
            assert!(settled < nat, "{nat_min} min NAT: settled at {settled:?}");
            assert!(
                settled.as_secs_f64() >= 0.8 * nat.as_secs_f64(),
                "{nat_min} min NAT: settled at {settled:?}"
            );
            assert!(probes <= 8, "too many probes: {probes}");
        }
    }

    #[test]
    fn long_nat_timeouts_reach_the_maximum() {
        let (settled, _) = converge(secs(28 * 60), MarsConfig::default());
        assert_eq!(settled, secs(600));
    }

    #[test]
    fn learned_interval_is_remembered_per_network() {
        let mut hb = MarsPolicy::new(MarsConfig::default());
        while hb.phase() == Phase::Probing {
            if hb.interval() < secs(300) {
                hb.on_pong();
            } else {
                hb.on_timeout();
            }
        }
        let wifi = hb.interval();
        hb.set_network("cellular");
        assert_eq!(hb.interval(), secs(210));
        assert_eq!(hb.phase(), Phase::Probing);
        hb.set_network("default");
        assert_eq!(hb.interval(), wifi);
        assert_eq!(hb.phase(), Phase::Settled);
    }

    #[test]
    fn first_probe_failing_stays_at_the_minimum() {
        let mut hb = MarsPolicy::new(MarsConfig::default());
        assert_eq!(hb.on_timeout(), secs(210));
    }
}
