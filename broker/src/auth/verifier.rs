//! Runs the [`Authenticator`] so that password checks cannot take the broker down.
//!
//! Attempts that carry a user name or password (the ones that cost a hash) pass, in order:
//! 1. the per-address rate limit and, after `free_failures` consecutive failures,
//!    exponential back-off ([`RateLimiter`]): refused with 0x9F
//!    Connection rate exceeded (3.1.1: return code 3, server unavailable);
//! 2. the global rate and the bounded wait: at most `max_concurrent` verifications run on
//!    blocking threads and at most `max_waiting` more wait for one; beyond that, 0x89
//!    Server busy (3.1.1: 3).
//!
//! Anonymous and client-certificate logins cost nothing and skip both. A verification that
//! has started finishes even if its client goes away, and holds its slot until then.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_proto::ReasonCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::rate_limit::{RateLimiter, Refusal};
use super::{Authenticator, Credentials, Identity};
use crate::config::AuthLimits;

/// One CONNECT's credentials and where it came from.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub peer: IpAddr,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// Common name of a verified client certificate.
    pub cert_user: Option<String>,
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct VerifierStats {
    /// Refused by the per-address rate limit or back-off.
    pub rate_limited: AtomicUsize,
    /// Refused because the pool and its queue were full, or the global rate was exceeded.
    pub busy: AtomicUsize,
    /// Verifications run.
    pub verified: AtomicUsize,
}

/// The bounded, rate-limited front of an [`Authenticator`].
pub struct Verifier {
    auth: Arc<dyn Authenticator>,
    limits: AuthLimits,
    running: Arc<Semaphore>,
    /// Attempts running or waiting for a slot.
    admitted: AtomicUsize,
    limiter: Mutex<RateLimiter>,
    pub stats: VerifierStats,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Gives back an admission slot when the attempt ends, however it ends.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Verifier {
    pub fn new(auth: Arc<dyn Authenticator>, mut limits: AuthLimits) -> Verifier {
        if limits.max_concurrent == 0 {
            limits.max_concurrent = std::thread::available_parallelism().map_or(2, |n| n.get());
        }
        Verifier {
            running: Arc::new(Semaphore::new(limits.max_concurrent)),
            limiter: Mutex::new(RateLimiter::new(limits.clone(), Instant::now())),
            admitted: AtomicUsize::new(0),
            stats: VerifierStats::default(),
            auth,
            limits,
        }
    }

    /// The authenticator behind the limits.
    pub fn authenticator(&self) -> &Arc<dyn Authenticator> {
        &self.auth
    }

    /// Authenticates `a` within the limits; `Err` is the CONNACK reason.
    pub async fn verify(&self, a: Attempt) -> Result<Identity, ReasonCode> {
        let costly = a.cert_user.is_none() && (a.username.is_some() || a.password.is_some());
        if !costly {
            // Never queued behind password hashes.
            return self.run(a, None).await;
        }
        // IM tokens: phones behind one carrier NAT address log in with them all the time,
        // so they skip the per-address rate limit; they still run in the bounded pool (a
        // password that merely looks like a token may reach a password check).
        let token = a
            .password
            .as_ref()
            .is_some_and(|p| p.starts_with(crate::im::token::PREFIX.as_bytes()));
        let admitted = if token {
            Ok(())
        } else {
            self.limiter.lock().admit(a.peer, Instant::now())
        };
        match admitted {
            Ok(()) => {}
            Err(Refusal::Address) => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                return Err(ReasonCode::ConnectionRateExceeded);
            }
            Err(Refusal::Global) => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                return Err(ReasonCode::ServerBusy);
            }
        }
        let bound = self.limits.max_concurrent + self.limits.max_waiting;
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= bound {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            return Err(ReasonCode::ServerBusy);
        }
        let _slot = Admitted(&self.admitted);
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ReasonCode::ServerUnavailable)?;
        let peer = a.peer;
        let result = self.run(a, Some(permit)).await;
        self.stats.verified.fetch_add(1, Ordering::Relaxed);
        self.limiter
            .lock()
            .record(peer, result.is_ok(), Instant::now());
        result
    }

    /// Admits a login that does not go through [`Verifier::verify`] (a SCRAM exchange)
    /// under the same per-address and global rate limits; `Err` is the CONNACK reason.
    pub fn admit(&self, peer: IpAddr) -> Result<(), ReasonCode> {
        let admitted = self.limiter.lock().admit(peer, Instant::now());
        admitted.map_err(|r| match r {
            Refusal::Address => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                ReasonCode::ConnectionRateExceeded
            }
            Refusal::Global => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                ReasonCode::ServerBusy
            }
        })
    }

    /// Records the outcome of a login admitted with [`Verifier::admit`] (failures back off).
    pub fn record(&self, peer: IpAddr, success: bool) {
        self.limiter.lock().record(peer, success, Instant::now());
    }

    /// Calls the authenticator on a blocking thread, holding `permit` (one of
    /// `max_concurrent` slots) until it returns.
    async fn run(
        &self,
        a: Attempt,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Identity, ReasonCode> {
        let auth = self.auth.clone();
        let client_id = a.client_id.clone();
        let mut identity = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            auth.authenticate(&Credentials {
                client_id: &a.client_id,
                username: a.username.as_deref(),
                password: a.password.as_deref(),
                cert_user: a.cert_user.as_deref(),
            })
        })
        .await
        .unwrap_or(Err(ReasonCode::ServerUnavailable))?;
        if identity.client_id.is_empty() {
            identity.client_id = client_id;
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Blocks every verification until released; accepts password "ok".
    struct Gate(Arc<AtomicBool>);

    impl Authenticator for Gate {
        fn authenticate(&self, c: &Credentials<'_>) -> Result<Identity, ReasonCode> {
            while !self.0.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            if c.password == Some(b"ok") {
                Ok(Identity::default())
            } else {
                Err(ReasonCode::BadUserNameOrPassword)
            }
        }
    }

    fn attempt(peer: &str, password: &'static [u8]) -> Attempt {
        Attempt {
            peer: peer.parse().expect("ip"),
            client_id: "c".into(),
            username: Some("u".into()),
            password: Some(Bytes::from_static(password)),
            cert_user: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_pool_and_queue_answer_server_busy() {
        let open = Arc::new(AtomicBool::new(false));
        let v = Arc::new(Verifier::new(
            Arc::new(Gate(open.clone())),
            AuthLimits {
                max_concurrent: 1,
                max_waiting: 1,
                ..AuthLimits::default()
            },
        ));
        let first = tokio::spawn({
            let v = v.clone();
            async move { v.verify(attempt("10.0.0.1", b"ok")).await }
        });
        let second = tokio::spawn({
            let v = v.clone();
            async move { v.verify(attempt("10.0.0.2", b"ok")).await }
        });
        while v.admitted.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            v.verify(attempt("10.0.0.3", b"ok")).await,
            Err(ReasonCode::ServerBusy)
        );
        open.store(true, Ordering::Release);
        assert!(first.await.expect("join").is_ok());
        assert!(second.await.expect("join").is_ok());
        let id = v
            .verify(attempt("10.0.0.3", b"ok"))
            .await
            .expect("room again");
        assert_eq!(id.client_id, "c", "client id filled in");
    }

    #[tokio::test]
    async fn failures_from_one_address_back_off() {
        let v = Verifier::new(
            Arc::new(Gate(Arc::new(AtomicBool::new(true)))),
            AuthLimits {
                free_failures: 0,
                ..AuthLimits::default()
            },
        );
        assert_eq!(
            v.verify(attempt("10.0.0.1", b"bad")).await,
            Err(ReasonCode::BadUserNameOrPassword)
        );
        assert_eq!(
            v.verify(attempt("10.0.0.1", b"ok")).await,
            Err(ReasonCode::ConnectionRateExceeded),
            "backing off"
        );
        assert!(v.verify(attempt("10.0.0.2", b"ok")).await.is_ok());
    }
}
