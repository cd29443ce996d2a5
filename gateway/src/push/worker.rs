//! The worker's state ([`Worker`]) and what it does with one job: for each recipient, read
//! the device tokens and quiet hours (`push/tokens`), pick each token's provider by vendor,
//! try until sent, dead, refused or out of attempts (exponential back-off with jitter, at
//! least the provider's `Retry-After`), remove dead tokens (`push/unregister`), and record
//! every decision in the trace, the logs (target `push`) and the counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{Value, json};
use switchboard_proto::im::PushJob;

use super::PushConfig;
use super::https;
use super::jobs::recipients;
use super::provider::{Device, Notification, Outcome, PushProvider};
use super::quiet::{QuietHours, QuietMode};
use super::stats::{PushStats, Reason};
use super::templates::{Fields, Template};
use super::tenants::Providers;
use super::trace::{Recent, Trace, TraceEntry};
use crate::service::ServiceClient;

/// The worker's shared state.
pub struct Worker {
    pub(super) service: ServiceClient,
    pub(super) cfg: PushConfig,
    pub(super) tls: Arc<rustls::ClientConfig>,
    pub(super) recent: Mutex<Recent>,
    pub(super) tenants: Mutex<HashMap<u64, Arc<Providers>>>,
    pub(super) stats: Arc<PushStats>,
    trace: Trace,
    /// Recently read `push/tokens` answers by (tenant, user), for
    /// [`PushConfig::tokens_ttl`]: a burst of messages to one user costs one round trip to
    /// the broker. Bounded by [`MAX_CACHED_USERS`] (emptied when full).
    reach_cache: Mutex<HashMap<(u64, String), Fresh>>,
    /// The same decisions, sent to the broker for every gateway's console.
    report: crate::console::push_trace::TraceReporter,
}

/// A cached `push/tokens` answer and when it was read.
type Fresh = (Instant, Arc<Reach>);

/// Most users whose devices are cached at once.
pub const MAX_CACHED_USERS: usize = 65_536;

/// A user's devices, quiet hours and preview switch, as `push/tokens` answers.
struct Reach {
    tokens: Vec<Device>,
    quiet: Option<QuietHours>,
    hide_preview: bool,
}

/// One job's notification as the job says it, and what its templates are filled with.
struct Job {
    n: Notification,
    fields: Fields,
    /// Only devices of these platforms (`ios`: APNs, `android`: the others); empty: all.
    platforms: Vec<String>,
}

impl Worker {
    /// A worker making calls through `service`.
    pub fn new(service: ServiceClient, cfg: PushConfig) -> Result<Arc<Worker>, String> {
        let tls = https::tls_config(cfg.extra_ca_pem.as_deref())?;
        let w = Arc::new(Worker {
            report: crate::console::push_trace::TraceReporter::start(service.clone()),
            service,
            cfg,
            tls,
            recent: Mutex::new(Recent::default()),
            tenants: Mutex::new(HashMap::new()),
            stats: Arc::default(),
            trace: Trace::default(),
            reach_cache: Mutex::new(HashMap::new()),
        });
        w.check_configured()?;
        Ok(w)
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
        let time_ms = self
            .cfg
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.report.report(json!({
            "time_ms": time_ms, "tenant": tenant, "job": n.job_id, "user": user,
            "vendor": vendor, "outcome": outcome, "detail": detail,
            "conversation": n.conversation, "seq": n.seq,
        }));
        self.trace.push(TraceEntry {
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
        self.trace.latest(tenant, user, limit)
    }

    /// The user's devices, from the cache while fresh.
    async fn cached_reach(&self, tenant: u64, user: &str) -> Result<Arc<Reach>, String> {
        let ttl = self.cfg.tokens_ttl;
        let key = (tenant, user.to_owned());
        if !ttl.is_zero()
            && let Some((at, r)) = self.reach_cache.lock().get(&key)
            && at.elapsed() < ttl
        {
            return Ok(r.clone());
        }
        let r = Arc::new(self.reach(tenant, user).await?);
        if !ttl.is_zero() {
            let mut c = self.reach_cache.lock();
            if c.len() >= MAX_CACHED_USERS {
                c.clear();
            }
            c.insert(key, (Instant::now(), r.clone()));
        }
        Ok(r)
    }

    async fn reach(&self, tenant: u64, user: &str) -> Result<Reach, String> {
        let v = self
            .service
            .call("push/tokens", &json!({"tenant": tenant, "user": user}))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Reach {
            tokens: serde_json::from_value(v["tokens"].clone()).unwrap_or_default(),
            quiet: QuietHours::from_json(&v["quiet"]),
            hide_preview: v["hide_preview"].as_bool().unwrap_or(false),
        })
    }

    /// Sends a test notification to each device of `user` now (no retries, quiet hours
    /// ignored: an operator is asking) and returns each provider's answer.
    pub async fn test_user(&self, tenant: u64, user: &str) -> Result<Vec<Value>, String> {
        let providers = self.providers(tenant).await?;
        let reach = self.reach(tenant, user).await?;
        let n = Notification {
            job_id: format!("test:{}", rand::random::<u64>()),
            title: "Test".into(),
            body: "A test notification".into(),
            badge: None,
            collapse_key: "push-test".into(),
            conversation: String::new(),
            seq: 0,
            from: String::new(),
            silent: false,
        };
        let mut out = Vec::new();
        for d in reach.tokens {
            let short: String = d.token.chars().take(8).collect();
            let mut answer = match providers.by_vendor.get(&d.vendor) {
                None => json!({"outcome": "no_credentials"}),
                Some(p) => match p.send(&d, &n).await {
                    Outcome::Sent => json!({"outcome": "sent"}),
                    Outcome::Dead(why) => json!({"outcome": "dead_token", "detail": why}),
                    Outcome::Retry { reason, .. } => json!({"outcome": "retry", "detail": reason}),
                    Outcome::Failed(why) => json!({"outcome": "failed", "detail": why}),
                },
            };
            answer["vendor"] = d.vendor.clone().into();
            answer["token"] = format!("{short}…").into();
            out.push(answer);
        }
        Ok(out)
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
            silent: false,
        };
        let fields = Fields {
            kind: job.kind.clone(),
            group: job.group,
            sender: if job.sender_name.is_empty() {
                job.from.clone()
            } else {
                job.sender_name.clone()
            },
            group_name: job.group_name.clone(),
            app: job.app_name.clone(),
            text: job.body.clone(),
            file: job.file_name.clone(),
        };
        let providers = match self.providers(job.tenant).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(target: "push", job = job.job_id, error = %e, "no push: credentials unavailable");
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                for user in recipients(&job) {
                    self.stats.fail("", Reason::BrokerUnavailable);
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
        let job_ = Job {
            n,
            fields,
            platforms: job.platforms.clone(),
        };
        for user in recipients(&job) {
            self.deliver_to_user(job.tenant, &user, &providers, &job_)
                .await;
        }
    }

    async fn deliver_to_user(&self, tenant: u64, user: &str, p: &Providers, job: &Job) {
        let n = &job.n;
        let reach = match self.cached_reach(tenant, user).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: "push", job = n.job_id, user, error = %e, "no push: cannot read tokens");
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.stats.fail("", Reason::BrokerUnavailable);
                self.record(tenant, n, user, "", "tokens_unavailable", e);
                return;
            }
        };
        if reach.tokens.is_empty() {
            tracing::info!(target: "push", job = n.job_id, user, "no push: the user has no device token");
            self.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
            self.stats.fail("", Reason::NoToken);
            self.record(tenant, n, user, "", "no_token", String::new());
            return;
        }
        let quiet = reach
            .quiet
            .as_ref()
            .filter(|q| q.active(self.cfg.clock.now()))
            .map(|q| q.mode);
        if quiet == Some(QuietMode::Suppress) {
            tracing::info!(target: "push", job = n.job_id, user, "no push: quiet hours");
            self.stats.fail("", Reason::QuietHours);
            self.record(
                tenant,
                n,
                user,
                "",
                "quiet_hours",
                "quiet hours: suppressed".into(),
            );
            return;
        }
        let silent = quiet == Some(QuietMode::Silent);
        let own = Template {
            title: n.title.clone(),
            body: n.body.clone(),
        };
        // Hidden previews: the tenant's switch (the broker left the text out) or the user's.
        let hide = reach.hide_preview || (n.body.is_empty() && job.fields.kind.is_empty());
        let wanted = |d: &&Device| {
            let platform = if d.vendor == "apns" { "ios" } else { "android" };
            job.platforms.is_empty() || job.platforms.iter().any(|p| p == platform)
        };
        for d in reach.tokens.iter().filter(wanted) {
            let shown = p.templates.render(&d.lang, &job.fields, &own, hide);
            let n = Notification {
                title: shown.title,
                body: shown.body,
                silent,
                ..n.clone()
            };
            self.deliver_to_device(tenant, user, p, &n, d.clone()).await;
        }
    }

    async fn deliver_to_device(
        &self,
        tenant: u64,
        user: &str,
        p: &Providers,
        n: &Notification,
        d: Device,
    ) {
        let Some(provider) = p.by_vendor.get(&d.vendor) else {
            tracing::info!(target: "push", job = n.job_id, user, vendor = d.vendor,
                "no push: no credentials for this vendor");
            self.stats.undeliverable.fetch_add(1, Ordering::Relaxed);
            self.stats.fail(&d.vendor, Reason::NoCredentials);
            self.record(tenant, n, user, &d.vendor, "no_credentials", String::new());
            return;
        };
        let started = Instant::now();
        let outcome = self.attempts(provider.as_ref(), &d, n).await;
        self.stats.observe_latency(started.elapsed());
        match outcome {
            Outcome::Sent => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                let detail = if n.silent {
                    self.stats.sent_silent.fetch_add(1, Ordering::Relaxed);
                    "quiet hours: delivered silently".to_owned()
                } else {
                    String::new()
                };
                self.record(tenant, n, user, &d.vendor, "sent", detail);
                tracing::debug!(target: "push", job = n.job_id, user, vendor = d.vendor, "sent");
            }
            Outcome::Dead(why) => {
                tracing::info!(target: "push", job = n.job_id, user, vendor = d.vendor, why,
                    "dead token removed");
                self.stats.fail(&d.vendor, Reason::DeadToken);
                self.record(tenant, n, user, &d.vendor, "token_removed", why.clone());
                self.reach_cache.lock().remove(&(tenant, user.to_owned()));
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
                self.stats.fail(&d.vendor, Reason::ProviderError);
                tracing::warn!(target: "push", job = n.job_id, user, vendor = d.vendor, why,
                    "no push: provider error");
                self.record(tenant, n, user, &d.vendor, "provider_error", why);
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
}
