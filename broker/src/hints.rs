//! Network hints for the adaptive heartbeat: devices on the same network sit behind the same
//! NAT, so the idle interval earlier devices proved there is a good first guess for the next
//! one (docs/protocol.md, "Heartbeat hints").
//!
//! Clients report the interval their heartbeat settled on, per network; the table
//! aggregates the reports per *network key* and hands a hint to a client that asks. The key
//! is the network id the client declares (a carrier's MCC-MNC, a hash of a Wi-Fi SSID...)
//! together with the source address prefix the broker sees (/24 for IPv4, /48 for IPv6),
//! so a client can only ever feed the hints of the networks its own address belongs to.
//!
//! The hint is the lower quartile of the latest report of each distinct reporter, handed
//! out only once [`HintConfig::min_reporters`] have reported: a lying minority cannot raise
//! it, and the SDK confirms any hint with its own probes before it uses it, so a wrong hint
//! costs probes, never the link.
//!
//! Bounded: at most [`HintConfig::max_networks`] keys (least recently used evicted first),
//! at most [`HintConfig::max_per_prefix`] of them per address prefix (a client inventing
//! network ids evicts its own prefix's keys, not other networks'), at most
//! [`HintConfig::max_reports`] reporters per key (the oldest report goes), and reports
//! expire after [`HintConfig::ttl_secs`]. A pure state machine: time is an input.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Settings of the heartbeat hint table (`broker.heartbeat_hints`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HintConfig {
    /// Network keys remembered; 0 turns hints off (every request gets "no hint").
    pub max_networks: usize,
    /// Keys one address prefix may hold; a new one evicts that prefix's least recently
    /// used key.
    pub max_per_prefix: usize,
    /// Distinct reporters needed before a key's hint is handed out.
    pub min_reporters: usize,
    /// Reporters remembered per key (the latest report of each); the oldest goes first.
    pub max_reports: usize,
    /// A report is forgotten this long after it was made (NATs change).
    pub ttl_secs: u64,
}

impl Default for HintConfig {
    fn default() -> Self {
        HintConfig {
            max_networks: 4096,
            max_per_prefix: 32,
            min_reporters: 3,
            max_reports: 16,
            ttl_secs: 24 * 3600,
        }
    }
}

/// Why a report or a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    #[error("network id must be 1..=64 printable ASCII characters without spaces")]
    BadNetwork,
    #[error("interval must be 1 ms..=65535 s, and within the broker's maximum keep-alive")]
    BadInterval,
    #[error("heartbeat hints are turned off")]
    Off,
}

/// The longest interval a report may carry: MQTT's largest keep-alive.
const MAX_INTERVAL_MS: u32 = 65_535_000;

/// The source address prefix a client reports from: /24 (IPv4), /48 (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix(IpAddr);

impl Prefix {
    pub fn of(ip: IpAddr) -> Prefix {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Prefix(IpAddr::from([a, b, c, 0]))
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Prefix(IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0]))
            }
        }
    }
}

/// Checks a declared network id (see [`HintError::BadNetwork`]).
pub fn valid_network(id: &str) -> Result<(), HintError> {
    let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(HintError::BadNetwork)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    network: Box<str>,
    prefix: Prefix,
}

#[derive(Debug, Clone, Copy)]
struct Report {
    /// A keyed hash of the reporter's session key: distinct reporters, nothing readable.
    reporter: u64,
    millis: u32,
    at: Instant,
}

#[derive(Debug)]
struct Entry {
    reports: Vec<Report>,
    /// Position in the recency order.
    tick: u64,
}

/// The table (see the module documentation).
#[derive(Debug)]
pub struct HintTable {
    cfg: HintConfig,
    entries: HashMap<Key, Entry>,
    /// Recency order: tick → key; the first is the least recently used.
    order: BTreeMap<u64, Key>,
    per_prefix: HashMap<Prefix, usize>,
    next_tick: u64,
    hasher: RandomState,
}

impl HintTable {
    pub fn new(cfg: HintConfig) -> HintTable {
        HintTable {
            cfg,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            per_prefix: HashMap::new(),
            next_tick: 0,
            hasher: RandomState::new(),
        }
    }

    /// Network keys held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `reporter` (a session key), connected from `peer`, proved `interval` on `network`.
    pub fn report(
        &mut self,
        now: Instant,
        network: &str,
        peer: IpAddr,
        reporter: &str,
        interval: Duration,
    ) -> Result<(), HintError> {
        valid_network(network)?;
        let millis = interval.as_millis();
        if millis == 0 || millis > u128::from(MAX_INTERVAL_MS) {
            return Err(HintError::BadInterval);
        }
        let millis = millis as u32;
        if self.cfg.max_networks == 0 {
            return Err(HintError::Off);
        }
        let key = Key {
            network: network.into(),
            prefix: Prefix::of(peer),
        };
        if !self.entries.contains_key(&key) {
            self.make_room(key.prefix);
            *self.per_prefix.entry(key.prefix).or_default() += 1;
            self.entries.insert(
                key.clone(),
                Entry {
                    reports: Vec::new(),
                    tick: 0,
                },
            );
        }
        let tick = self.touch(&key);
        let reporter = self.hasher.hash_one(reporter);
        let (max_reports, ttl) = (self.cfg.max_reports.max(1), self.ttl());
        if let Some(e) = self.entries.get_mut(&key) {
            e.tick = tick;
            e.reports
                .retain(|r| r.reporter != reporter && now.duration_since(r.at) < ttl);
            if e.reports.len() >= max_reports {
                // Oldest first: reports are appended in time order.
                e.reports.remove(0);
            }
            e.reports.push(Report {
                reporter,
                millis,
                at: now,
            });
        }
        Ok(())
    }

    /// The hint for a client connected from `peer` on `network`, if enough distinct
    /// reporters settled there recently: the lower quartile of their intervals.
    pub fn hint(
        &mut self,
        now: Instant,
        network: &str,
        peer: IpAddr,
    ) -> Result<Option<Duration>, HintError> {
        valid_network(network)?;
        let key = Key {
            network: network.into(),
            prefix: Prefix::of(peer),
        };
        let ttl = self.ttl();
        let Some(e) = self.entries.get_mut(&key) else {
            return Ok(None);
        };
        e.reports.retain(|r| now.duration_since(r.at) < ttl);
        if e.reports.is_empty() {
            self.remove(&key);
            return Ok(None);
        }
        if e.reports.len() < self.cfg.min_reporters.max(1) {
            return Ok(None);
        }
        let mut millis: Vec<u32> = e.reports.iter().map(|r| r.millis).collect();
        millis.sort_unstable();
        let hint = Duration::from_millis(u64::from(millis[(millis.len() - 1) / 4]));
        let tick = self.touch(&key);
        if let Some(e) = self.entries.get_mut(&key) {
            e.tick = tick;
        }
        Ok(Some(hint))
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.ttl_secs)
    }

    /// Moves `key` to the most recent end of the order; returns its new tick.
    fn touch(&mut self, key: &Key) -> u64 {
        if let Some(old) = self.entries.get(key).map(|e| e.tick) {
            self.order.remove(&old);
        }
        self.next_tick += 1;
        self.order.insert(self.next_tick, key.clone());
        self.next_tick
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
            if let Some(n) = self.per_prefix.get_mut(&key.prefix) {
                *n -= 1;
                if *n == 0 {
                    self.per_prefix.remove(&key.prefix);
                }
            }
        }
    }

    /// Before a new key of `prefix` goes in: evicts that prefix's least recently used key
    /// when the prefix is full, else the table's when the table is.
    fn make_room(&mut self, prefix: Prefix) {
        let victim = if self.per_prefix.get(&prefix).copied().unwrap_or(0)
            >= self.cfg.max_per_prefix.max(1)
        {
            self.order.values().find(|k| k.prefix == prefix).cloned()
        } else if self.entries.len() >= self.cfg.max_networks {
            self.order.values().next().cloned()
        } else {
            None
        };
        if let Some(k) = victim {
            self.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_hint_needs_several_distinct_reporters_and_is_their_lower_quartile() {
        let mut t = HintTable::new(HintConfig::default());
        let now = Instant::now();
        let a = ip("10.1.2.3");
        t.report(now, "46000", a, "d1", secs(280)).expect("report");
        t.report(now, "46000", a, "d1", secs(290)).expect("report");
        t.report(now, "46000", ip("10.1.2.9"), "d2", secs(285))
            .expect("report");
        assert_eq!(t.hint(now, "46000", a), Ok(None), "two reporters only");
        for (i, s) in [(3, 1200), (4, 1200), (5, 1200)] {
            t.report(now, "46000", a, &format!("d{i}"), secs(s))
                .expect("report");
        }
        // d1's latest report counts once: 285, 290, 1200, 1200, 1200. The lower quartile
        // (the second of five) stays with the honest values.
        assert_eq!(t.hint(now, "46000", ip("10.1.2.200")), Ok(Some(secs(290))));
        assert_eq!(t.hint(now, "46000", ip("10.1.3.1")), Ok(None), "other /24");
        assert_eq!(t.hint(now, "46001", a), Ok(None), "other network id");
    }

    #[test]
    fn reports_expire() {
        let mut t = HintTable::new(HintConfig::default());
        let now = Instant::now();
        for i in 0..3 {
            t.report(now, "wifi", ip("192.0.2.1"), &format!("d{i}"), secs(600))
                .expect("report");
        }
        assert_eq!(t.hint(now, "wifi", ip("192.0.2.1")), Ok(Some(secs(600))));
        let later = now + Duration::from_secs(24 * 3600);
        assert_eq!(t.hint(later, "wifi", ip("192.0.2.1")), Ok(None));
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_and_each_prefix_are_bounded() {
        let cfg = HintConfig {
            max_networks: 100,
            max_per_prefix: 10,
            ..HintConfig::default()
        };
        let mut t = HintTable::new(cfg);
        let now = Instant::now();
        for i in 0..3 {
            t.report(now, "home", ip("198.51.100.7"), &format!("d{i}"), secs(900))
                .expect("report");
        }
        // One address invents thousands of networks: only its own prefix's keys churn.
        for n in 0..5000 {
            t.report(
                now,
                &format!("fake{n}"),
                ip("203.0.113.5"),
                "liar",
                secs(3000),
            )
            .expect("report");
        }
        assert_eq!(t.len(), 11);
        assert_eq!(t.hint(now, "home", ip("198.51.100.7")), Ok(Some(secs(900))));
        // Many prefixes: the table stays at its bound, least recently used out first.
        for p in 0..1000u32 {
            let peer = IpAddr::from([100, (p >> 8) as u8, p as u8, 1]);
            t.report(now, "x", peer, "d", secs(60)).expect("report");
        }
        assert_eq!(t.len(), 100);
        // Reporters per key are bounded too.
        for i in 0..100 {
            t.report(now, "big", ip("192.0.2.1"), &format!("d{i}"), secs(700))
                .expect("report");
        }
        let big = Key {
            network: "big".into(),
            prefix: Prefix::of(ip("192.0.2.1")),
        };
        assert_eq!(t.entries.get(&big).map(|e| e.reports.len()), Some(16));
    }

    #[test]
    fn bad_input_is_refused() {
        let mut t = HintTable::new(HintConfig::default());
        let now = Instant::now();
        let a = ip("::1");
        assert_eq!(
            t.report(now, "", a, "d", secs(60)),
            Err(HintError::BadNetwork)
        );
        assert_eq!(
            t.report(now, "two words", a, "d", secs(60)),
            Err(HintError::BadNetwork)
        );
        assert_eq!(
            t.report(now, &"x".repeat(65), a, "d", secs(60)),
            Err(HintError::BadNetwork)
        );
        assert_eq!(
            t.report(now, "n", a, "d", secs(0)),
            Err(HintError::BadInterval)
        );
        assert_eq!(t.hint(now, "é", a), Err(HintError::BadNetwork));
        assert_eq!(
            Prefix::of(ip("2001:db8:1:2::5")),
            Prefix::of(ip("2001:db8:1:ffff::1"))
        );
        assert_eq!(
            Prefix::of(ip("::ffff:10.0.0.1")),
            Prefix::of(ip("10.0.0.77"))
        );
    }
}
