//! Draining a node (`switchboard ctl drain`, `POST /api/v1/drain`): it refuses new
//! CONNECTs with 0x9C Use another server and a Server Reference (MQTT 5.0 section 4.11),
//! and disconnects its clients with DISCONNECT 0x9C and the same reference, so that they
//! move to another node (their sessions follow through the shared store). The reference
//! is the one asked for, else `cluster.redirect_to`, else the address of another node with
//! a current lease; without any, clients are still sent away (to the load balancer).

use switchboard_proto::ReasonCode;

use crate::BrokerState;

/// What a drain did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drained {
    pub draining: bool,
    pub server_reference: Option<String>,
    /// Connections asked to move.
    pub disconnected: usize,
}

impl BrokerState {
    /// Starts draining this node towards `to` (see the module doc for the default).
    pub async fn drain(&self, to: Option<String>) -> Drained {
        let mut reference = to;
        if reference.is_none()
            && let Some(c) = &self.cluster
        {
            reference = c.redirect_to().map(str::to_owned);
            if reference.is_none()
                && let Some(reg) = c.registry()
            {
                match reg.peers().await {
                    Ok(peers) => reference = peers.into_iter().next(),
                    Err(e) => tracing::warn!(error = %e, "cannot look up another node to drain to"),
                }
            }
        }
        self.sessions.set_draining(Some(reference.clone()));
        let mut disconnected = 0;
        for id in self.online_clients() {
            if self.kick_with(&id, ReasonCode::UseAnotherServer, reference.clone()) {
                disconnected += 1;
            }
        }
        tracing::info!(to = ?reference, disconnected, "node draining");
        Drained {
            draining: true,
            server_reference: reference,
            disconnected,
        }
    }

    /// Stops draining: new CONNECTs are accepted again.
    pub fn undrain(&self) -> Drained {
        self.sessions.set_draining(None);
        tracing::info!("node no longer draining");
        Drained {
            draining: false,
            server_reference: None,
            disconnected: 0,
        }
    }
}
