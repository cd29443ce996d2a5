//! The push worker: delivers the broker's push jobs (`$im/push/{tenant}`, protobuf
//! `PushJob`, one per message to a user with no device in the foreground) through APNs,
//! FCM, Huawei Push Kit and Xiaomi MiPush.
//!
//! Jobs arrive through the shared subscription [`PUSH_FILTER`], so gateway instances split
//! them. Each job is handled once per instance (a bounded set of recent job ids), at most
//! [`PushConfig::max_concurrent`] at a time. For each recipient the worker reads the user's
//! device tokens (`push/tokens`), picks the provider by the token's vendor, set up from the
//! tenant's credentials (`push/credentials/get`, cached [`PushConfig::credentials_ttl`]; a
//! provider object, and so its connection, lives as long as the credentials are unchanged),
//! retries what the provider says is worth retrying (exponential back-off with jitter, at
//! least its `Retry-After`) and removes dead tokens (`push/unregister`). Secrets are never
//! logged. Every decision is logged under the `push` target with the job id (the per-job
//! trace). Counters: [`PushStats`].
//!
//! Files: [`provider`] (the [`provider::PushProvider`] trait), [`https`] (TLS and HTTP/2),
//! [`jwt`] (ES256/RS256), [`apns`], [`fcm`], [`huawei`], [`xiaomi`], [`rest`] (the app
//! server's credentials endpoint); docs/push.md.

pub mod apns;
pub mod fcm;
pub mod https;
pub mod huawei;
pub mod jwt;
pub mod provider;
pub mod rest;
pub mod xiaomi;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message as _;
use serde_json::{Value, json};
use switchboard_proto::im::PushJob;
use switchboard_proto::{Publish, QoS};
use tokio::sync::{Semaphore, mpsc};

use crate::service::ServiceClient;
use provider::{Device, Notification, Outcome, PushProvider};

/// The shared subscription gateways take push jobs through.
pub const PUSH_FILTER: &str = "$share/push/$im/push/#";
/// Jobs waiting for a slot (a few hundred bytes each): absorbs a burst (a broadcast to
/// many offline users). Beyond it the service connection's own queue (1024) fills and
/// then drops jobs with a log line.
pub const QUEUE: usize = 16_384;
/// Job ids remembered for idempotency.
const RECENT_JOBS: usize = 16_384;

/// Where the providers are and how hard to try.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Run the worker at all.
    pub enabled: bool,
    pub apns_production: String,
    pub apns_sandbox: String,
    pub fcm_base: String,
    /// Overrides the service account's `token_uri` (empty: the account's).
    pub fcm_token_uri: String,
    pub huawei_base: String,
    pub huawei_token_uri: String,
    pub xiaomi_base: String,
    /// An extra CA (PEM) to trust besides the system's roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Jobs handled at once per instance.
    pub max_concurrent: usize,
    /// Tries per device.
    pub max_attempts: u32,
    /// First retry delay (doubled each time, with jitter, at most 30 s).
    pub backoff: Duration,
    /// How long a tenant's credentials are cached.
    pub credentials_ttl: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            apns_production: "https://api.push.apple.com".into(),
            apns_sandbox: "https://api.sandbox.push.apple.com".into(),
            fcm_base: "https://fcm.googleapis.com".into(),
            fcm_token_uri: String::new(),
            huawei_base: "https://push-api.cloud.huawei.com".into(),
            huawei_token_uri: "https://oauth-login.cloud.huawei.com/oauth2/v3/token".into(),
            xiaomi_base: "https://api.xmpush.xiaomi.com".into(),
            extra_ca_pem: None,
            max_concurrent: 64,
            max_attempts: 5,
            backoff: Duration::from_millis(500),
            credentials_ttl: Duration::from_secs(60),
        }
    }
}

/// Counters of one worker.
#[derive(Debug, Default)]
pub struct PushStats {
    pub jobs: AtomicU64,
    pub duplicates: AtomicU64,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub tokens_removed: AtomicU64,
    /// Recipients with no token, or no credentials for the token's vendor.
    pub undeliverable: AtomicU64,
    /// Time from taking a device's delivery to the provider's final answer (retries
    /// included): sum in microseconds and count.
    pub latency_us: AtomicU64,
    pub latency_n: AtomicU64,
}

impl PushStats {
    /// The counters as JSON.
    pub fn snapshot(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "jobs": g(&self.jobs), "duplicates": g(&self.duplicates), "sent": g(&self.sent),
            "failed": g(&self.failed), "retried": g(&self.retried),
            "tokens_removed": g(&self.tokens_removed), "undeliverable": g(&self.undeliverable),
        })
    }

    /// The counters in the Prometheus text format (`/metrics` of the gateway).
    pub fn prometheus(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        for (name, help, v) in [
            ("jobs", "Push jobs taken", g(&self.jobs)),
            (
                "duplicate_jobs",
                "Push jobs skipped as already seen",
                g(&self.duplicates),
            ),
            (
                "sent",
                "Notifications accepted by a provider",
                g(&self.sent),
            ),
            (
                "failed",
                "Deliveries given up (provider error, or broker unreachable)",
                g(&self.failed),
            ),
            ("retried", "Provider attempts retried", g(&self.retried)),
            (
                "tokens_removed",
                "Dead device tokens removed",
                g(&self.tokens_removed),
            ),
            (
                "undeliverable",
                "Recipients or devices with no token or no credentials",
                g(&self.undeliverable),
            ),
        ] {
            out.push_str(&format!(
                "# HELP switchboard_push_{name}_total {help}.\n# TYPE switchboard_push_{name}_total counter\nswitchboard_push_{name}_total {v}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP switchboard_push_latency_seconds Delivery time per device, retries included.\n# TYPE switchboard_push_latency_seconds summary\nswitchboard_push_latency_seconds_sum {}\nswitchboard_push_latency_seconds_count {}\n",
            g(&self.latency_us) as f64 / 1e6,
            g(&self.latency_n)
        ));
        out
    }
}

/// Trace entries kept per instance.
const TRACE_LEN: usize = 2048;

/// One decision about one recipient's device: the per-job trace that answers "why did
/// this push not arrive" (`POST /v1/push/trace`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceEntry {
    pub time_ms: u64,
    pub tenant: u64,
    pub job: String,
    pub user: String,
    /// Empty when the user has no token.
    pub vendor: String,
    /// `sent`, `no_token`, `no_credentials`, `token_removed`, `provider_error`,
    /// `credentials_unavailable`, `tokens_unavailable`.
    pub outcome: &'static str,
    /// The provider's reason, when it gave one.
    pub detail: String,
}

/// Job ids seen lately, oldest forgotten first.
#[derive(Default)]
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    /// False when `id` was seen.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= RECENT_JOBS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// A tenant's providers, by vendor.
struct Providers {
    by_vendor: HashMap<String, Arc<dyn PushProvider>>,
    /// Digest of the credentials they were made from.
    digest: Vec<u8>,
    fetched: Instant,
}

/// The worker's shared state.
pub struct Worker {
    service: ServiceClient,
    cfg: PushConfig,
    tls: Arc<rustls::ClientConfig>,
    recent: Mutex<Recent>,
    tenants: Mutex<HashMap<u64, Arc<Providers>>>,
    stats: Arc<PushStats>,
    trace: Mutex<VecDeque<TraceEntry>>,
}

impl Worker {
    /// A worker making calls through `service`.
    pub fn new(service: ServiceClient, cfg: PushConfig) -> Result<Arc<Worker>, String> {
        let tls = https::tls_config(cfg.extra_ca_pem.as_deref())?;
        Ok(Arc::new(Worker {
            service,
            cfg,
            tls,
            recent: Mutex::new(Recent::default()),
            tenants: Mutex::new(HashMap::new()),
            stats: Arc::default(),
            trace: Mutex::new(VecDeque::new()),
        }))
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<PushStats> {
        self.stats.clone()
    }

    fn record(
        &self,
        tenant: u64,
        n: &Notification,
        user: &str,
        vendor: &str,
        outcome: &'static str,
        detail: String,
    ) {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut t = self.trace.lock();
        if t.len() >= TRACE_LEN {
            t.pop_front();
        }
        t.push_back(TraceEntry {
            time_ms,
            tenant,
            job: n.job_id.clone(),
            user: user.to_owned(),
            vendor: vendor.to_owned(),
            outcome,
            detail,
        });
    }

    /// The latest trace entries of `tenant` (of `user` if not empty), newest first.
    pub fn trace(&self, tenant: u64, user: &str, limit: usize) -> Vec<TraceEntry> {
        self.trace
            .lock()
            .iter()
            .rev()
            .filter(|e| e.tenant == tenant && (user.is_empty() || e.user == user))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Sends a test notification to each device of `user` now (no retries) and returns
    /// each provider's answer.
    pub async fn test_user(&self, tenant: u64, user: &str) -> Result<Vec<Value>, String> {
        let providers = self.providers(tenant).await?;
        let tokens = self
            .service
            .call("push/tokens", &json!({"tenant": tenant, "user": user}))
            .await
            .map_err(|e| e.to_string())?;
        let tokens: Vec<Device> =
            serde_json::from_value(tokens["tokens"].clone()).unwrap_or_default();
        let n = Notification {
            job_id: format!("test:{}", rand::random::<u64>()),
            title: "Test".into(),
            body: "A test notification".into(),
            badge: None,
            collapse_key: "push-test".into(),
            conversation: String::new(),
            seq: 0,
            from: String::new(),
        };
        let mut out = Vec::new();
        for d in tokens {
            let short: String = d.token.chars().take(8).collect();
            let answer = match providers.by_vendor.get(&d.vendor) {
                None => json!({"outcome": "no_credentials"}),
                Some(p) => match p.send(&d, &n).await {
                    Outcome::Sent => json!({"outcome": "sent"}),
                    Outcome::Dead(why) => json!({"outcome": "dead_token", "detail": why}),
                    Outcome::Retry { reason, .. } => json!({"outcome": "retry", "detail": reason}),
                    Outcome::Failed(why) => json!({"outcome": "failed", "detail": why}),
                },
            };
            out.push(with_fields(answer, &d.vendor, &format!("{short}…")));
        }
        Ok(out)
    }

    /// Subscribes to push jobs and handles them until `jobs` closes.
    pub async fn run(self: Arc<Self>, mut jobs: mpsc::Receiver<Publish>) {
        if let Err(e) = self
            .service
            .client()
            .subscribe_acked(PUSH_FILTER, QoS::AtLeastOnce)
            .await
        {
            tracing::error!(target: "push", error = %e, "cannot subscribe to push jobs; none will be sent");
            return;
        }
        let slots = Arc::new(Semaphore::new(self.cfg.max_concurrent.max(1)));
        while let Some(p) = jobs.recv().await {
            let Some(job) = decode(&p) else {
                tracing::warn!(target: "push", topic = p.topic, "undecodable push job skipped");
                continue;
            };
            if !self.recent.lock().insert(&job.job_id) {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "push", job = job.job_id, "duplicate job skipped");
                continue;
            }
            self.stats.jobs.fetch_add(1, Ordering::Relaxed);
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let w = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                w.handle(job).await;
            });
        }
    }

    /// Delivers one job to every device of its recipients.
    pub async fn handle(&self, job: PushJob) {
        let n = Notification {
            job_id: job.job_id.clone(),
            title: job.title.clone(),
            body: job.body.clone(),
            // A job for many users has no per-user total: leave their badges alone.
            badge: (job.users.is_empty() || !job.user.is_empty()).then_some(job.badge),
            collapse_key: job.collapse_key.clone(),
            conversation: job.conversation.clone(),
            seq: job.seq,
            from: job.from.clone(),
        };
        let providers = match self.providers(job.tenant).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(target: "push", job = job.job_id, error = %e, "no push: credentials unavailable");
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                for user in recipients(&job) {
                    self.record(
                        job.tenant,
                        &n,
                        &user,
                        "",
                        "credentials_unavailable",
                        e.clone(),
                    );
                }
                return;
            }
        };
        for user in recipients(&job) {
            self.deliver_to_user(job.tenant, &user, &providers, &n)
                .await;
        }
    }

    async fn deliver_to_user(&self, tenant: u64, user: &str, p: &Providers, n: &Notification) {
        let tokens = match self
            .service
            .call("push/tokens", &json!({"tenant": tenant, "user": user}))
            .await
        {
            Ok(v) => serde_json::from_value::<Vec<Device>>(v["tokens"].clone()).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(target: "push", job = n.job_id, user, error = %e, "no push: cannot read tokens");
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.record(tenant, n, user, "", "tokens_unavailable", e.to_string());
                return;
            }
        };
        if tokens.is_empty() {
            tracing::info!(target: "push", job = n.job_id, user, "no push: the user has no device token");
            self.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
            self.record(tenant, n, user, "", "no_token", String::new());
        }
        for d in tokens {
            let Some(provider) = p.by_vendor.get(&d.vendor) else {
                tracing::info!(target: "push", job = n.job_id, user, vendor = d.vendor,
                    "no push: no credentials for this vendor");
                self.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
                self.record(tenant, n, user, &d.vendor, "no_credentials", String::new());
                continue;
            };
            let started = Instant::now();
            let outcome = self.attempts(provider.as_ref(), &d, n).await;
            let us = started.elapsed().as_micros() as u64;
            self.stats.latency_us.fetch_add(us, Ordering::Relaxed);
            self.stats.latency_n.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Outcome::Sent => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    self.record(tenant, n, user, &d.vendor, "sent", String::new());
                    tracing::debug!(target: "push", job = n.job_id, user, vendor = d.vendor, "sent");
                }
                Outcome::Dead(why) => {
                    tracing::info!(target: "push", job = n.job_id, user, vendor = d.vendor, why,
                        "dead token removed");
                    self.record(tenant, n, user, &d.vendor, "token_removed", why.clone());
                    let body = json!({"tenant": tenant, "user": user, "token": d.token});
                    match self.service.call("push/unregister", &body).await {
                        Ok(_) => {
                            self.stats.tokens_removed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(target: "push", error = %e, "cannot remove a dead token")
                        }
                    }
                }
                Outcome::Retry { reason: why, .. } | Outcome::Failed(why) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "push", job = n.job_id, user, vendor = d.vendor, why,
                        "no push: provider error");
                    self.record(tenant, n, user, &d.vendor, "provider_error", why);
                }
            }
        }
    }

    /// Tries one device until sent, dead, failed, or out of attempts.
    async fn attempts(&self, p: &dyn PushProvider, d: &Device, n: &Notification) -> Outcome {
        let mut delay = self.cfg.backoff;
        let mut attempt = 1;
        loop {
            let out = p.send(d, n).await;
            let Outcome::Retry { reason, after } = &out else {
                return out;
            };
            if attempt >= self.cfg.max_attempts.max(1) {
                return out;
            }
            attempt += 1;
            self.stats.retried.fetch_add(1, Ordering::Relaxed);
            let jitter =
                Duration::from_millis(rand::random::<u64>() % (delay.as_millis() as u64 / 2 + 1));
            // Re-signing needs no wait; otherwise back off, at least as long as asked.
            let wait = match after {
                Some(a) if a.is_zero() => Duration::ZERO,
                Some(a) => (*a).max(delay) + jitter,
                None => delay + jitter,
            };
            tracing::debug!(target: "push", job = n.job_id, vendor = p.vendor(), reason, ?wait, "retrying");
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// The tenant's providers, from cache or from its credentials.
    async fn providers(&self, tenant: u64) -> Result<Arc<Providers>, String> {
        let cached = self.tenants.lock().get(&tenant).cloned();
        if let Some(p) = &cached
            && p.fetched.elapsed() < self.cfg.credentials_ttl
        {
            return Ok(p.clone());
        }
        let creds = self
            .service
            .call("push/credentials/get", &json!({"tenant": tenant}))
            .await
            .map_err(|e| e.to_string())?;
        let digest = ring::digest::digest(&ring::digest::SHA256, creds.to_string().as_bytes())
            .as_ref()
            .to_vec();
        let by_vendor = match cached {
            // Unchanged: keep the providers (and their connections and tokens).
            Some(p) if p.digest == digest => p.by_vendor.clone(),
            _ => self.build(tenant, &creds),
        };
        let p = Arc::new(Providers {
            by_vendor,
            digest,
            fetched: Instant::now(),
        });
        self.tenants.lock().insert(tenant, p.clone());
        Ok(p)
    }

    /// Providers from a tenant's credentials; bad ones are logged (not their content).
    fn build(&self, tenant: u64, creds: &Value) -> HashMap<String, Arc<dyn PushProvider>> {
        let mut out: HashMap<String, Arc<dyn PushProvider>> = HashMap::new();
        let c = &self.cfg;
        let http = || https::Https::new(self.tls.clone());
        let mut add = |vendor: &str, r: Result<Arc<dyn PushProvider>, String>| match r {
            Ok(p) => {
                out.insert(vendor.to_owned(), p);
            }
            Err(e) => {
                tracing::warn!(target: "push", tenant, vendor, error = %e, "unusable push credentials")
            }
        };
        if creds["apns"].is_object() {
            add(
                "apns",
                parse(&creds["apns"]).and_then(|a| {
                    let p = apns::Apns::new(a, &c.apns_production, &c.apns_sandbox, http())?;
                    Ok(Arc::new(p) as Arc<dyn PushProvider>)
                }),
            );
        }
        if creds["fcm"].is_object() {
            add(
                "fcm",
                fcm::service_account(&creds["fcm"]).and_then(|sa| {
                    let p = fcm::Fcm::new(sa, &c.fcm_base, &c.fcm_token_uri, http())?;
                    Ok(Arc::new(p) as Arc<dyn PushProvider>)
                }),
            );
        }
        if creds["huawei"].is_object() {
            add(
                "huawei",
                parse(&creds["huawei"]).map(|h| {
                    let p = huawei::Huawei::new(h, &c.huawei_base, &c.huawei_token_uri, http());
                    Arc::new(p) as Arc<dyn PushProvider>
                }),
            );
        }
        if creds["xiaomi"].is_object() {
            add(
                "xiaomi",
                parse(&creds["xiaomi"]).map(|x| {
                    Arc::new(xiaomi::Xiaomi::new(x, &c.xiaomi_base, http()))
                        as Arc<dyn PushProvider>
                }),
            );
        }
        out
    }
}

fn with_fields(mut v: Value, vendor: &str, token: &str) -> Value {
    v["vendor"] = vendor.into();
    v["token"] = token.into();
    v
}

/// A vendor's credentials object, typed.
fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

/// A job from `$im/push/{tenant}` (`PushJob`) or a broadcast's chunk of users from
/// `$im/push/{tenant}/broadcast` (`BroadcastPush`, made into a job for many users).
fn decode(p: &Publish) -> Option<PushJob> {
    if !p.topic.ends_with("/broadcast") {
        return PushJob::decode(p.payload.as_ref()).ok();
    }
    let b = switchboard_proto::im::BroadcastPush::decode(p.payload.as_ref()).ok()?;
    Some(PushJob {
        job_id: format!("{}:{}:{}:b{}", b.tenant, b.conversation, b.seq, b.chunk),
        tenant: b.tenant,
        title: b.title,
        body: b.body,
        collapse_key: b.conversation.clone(),
        conversation: b.conversation,
        seq: b.seq,
        users: b.users,
        ..PushJob::default()
    })
}

/// The recipients of a job.
fn recipients(job: &PushJob) -> Vec<String> {
    let mut users = Vec::new();
    if !job.user.is_empty() {
        users.push(job.user.clone());
    }
    for u in &job.users {
        if !u.is_empty() && !users.contains(u) {
            users.push(u.clone());
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_for_many_users_reaches_each_once() {
        let job = PushJob {
            users: vec!["a".into(), "b".into(), "a".into(), String::new()],
            ..Default::default()
        };
        assert_eq!(recipients(&job), vec!["a".to_owned(), "b".to_owned()]);
        let one = PushJob {
            user: "c".into(),
            ..Default::default()
        };
        assert_eq!(recipients(&one), vec!["c".to_owned()]);
    }

    #[test]
    fn broadcast_chunks_become_jobs_for_many_users() {
        let chunk = switchboard_proto::im::BroadcastPush {
            tenant: 7,
            conversation: "b:1".into(),
            seq: 3,
            users: vec!["a".into(), "b".into()],
            chunk: 2,
            ..Default::default()
        };
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "$im/push/7/broadcast".into(),
            pkid: 0,
            properties: Default::default(),
            payload: chunk.encode_to_vec().into(),
        };
        let job = decode(&p).expect("decodes");
        assert_eq!((job.tenant, job.job_id.as_str()), (7, "7:b:1:3:b2"));
        assert_eq!(recipients(&job), vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn recent_ids_are_bounded_and_deduplicate() {
        let mut r = Recent::default();
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        for i in 0..RECENT_JOBS {
            r.insert(&i.to_string());
        }
        assert!(r.set.len() <= RECENT_JOBS);
        assert!(r.insert("a"), "forgotten once old");
    }
}
