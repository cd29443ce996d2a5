//! Admission of IM requests: how many the service works on at once, over all devices and
//! per connection.
//!
//! The global bound keeps the service's memory and tasks bounded; the per-connection one
//! keeps one device from using it all up (QoS 0 requests are bounded by nothing else:
//! Receive Maximum only bounds QoS 1/2 ones). Beyond either bound a QoS 0 request is
//! dropped and a QoS 1/2 one refused with 0x97 (the client retries later); other
//! connections are unaffected by one connection's excess.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests the service works on at once, over all devices.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Requests one connection may have in flight at once.
pub const MAX_IN_FLIGHT_PER_CONNECTION: u32 = 64;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "too many IM requests in flight on this connection (at most {MAX_IN_FLIGHT_PER_CONNECTION})"
    )]
    Connection,
    #[error("too many IM requests in flight (at most {MAX_IN_FLIGHT})")]
    Global,
}

/// The two bounds.
#[derive(Debug)]
pub struct Admission {
    global: Arc<Semaphore>,
    /// In-flight count per connection (its session id); entries at zero are removed.
    per_conn: Arc<Mutex<HashMap<u64, u32>>>,
    per_conn_max: u32,
}

/// An admitted request; dropping it frees its place in both bounds.
#[derive(Debug)]
pub struct Permit {
    _global: OwnedSemaphorePermit,
    per_conn: Arc<Mutex<HashMap<u64, u32>>>,
    conn: u64,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_CONNECTION)
    }
}

impl Admission {
    pub fn new(global: usize, per_conn: u32) -> Admission {
        Admission {
            global: Arc::new(Semaphore::new(global)),
            per_conn: Arc::default(),
            per_conn_max: per_conn,
        }
    }

    /// Admits one request of connection `conn`, or says which bound it hit.
    pub fn admit(&self, conn: u64) -> Result<Permit, Refused> {
        {
            let mut counts = self.per_conn.lock();
            let n = counts.entry(conn).or_insert(0);
            if *n >= self.per_conn_max {
                return Err(Refused::Connection);
            }
            *n += 1;
        }
        match self.global.clone().try_acquire_owned() {
            Ok(p) => Ok(Permit {
                _global: p,
                per_conn: self.per_conn.clone(),
                conn,
            }),
            Err(_) => {
                release(&self.per_conn, conn);
                Err(Refused::Global)
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        release(&self.per_conn, self.conn);
    }
}

fn release(per_conn: &Mutex<HashMap<u64, u32>>, conn: u64) {
    let mut counts = per_conn.lock();
    if let Some(n) = counts.get_mut(&conn) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_connection_cannot_take_the_others_places() {
        let a = Admission::new(10, 3);
        let mine: Vec<Permit> = (0..3).map(|_| a.admit(1).expect("admitted")).collect();
        assert_eq!(a.admit(1).err(), Some(Refused::Connection));
        let other = a.admit(2).expect("another connection is unaffected");
        drop(mine);
        drop(other);
        assert!(a.per_conn.lock().is_empty(), "no entry left behind");
        let again = a.admit(1);
        assert!(again.is_ok(), "places come back when requests end");
    }

    #[test]
    fn the_global_bound_still_holds_and_refusals_free_the_connection_place() {
        let a = Admission::new(2, 5);
        let _p: Vec<Permit> = (0..2).map(|c| a.admit(c).expect("admitted")).collect();
        assert_eq!(a.admit(7).err(), Some(Refused::Global));
        assert!(!a.per_conn.lock().contains_key(&7));
    }
}
