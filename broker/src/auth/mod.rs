//! Who may connect, and what they may publish and subscribe to.
//!
//! This is the seam the IM layer's tenant/token model plugs into: an [`Authenticator`]
//! turns CONNECT credentials into an [`Identity`], and an [`Acl`] is asked before every
//! publish and subscribe. One file per job:
//! - [`password`]: the password file (argon2 and SCRAM credentials), anonymous access.
//! - [`verifier`] and [`rate_limit`]: runs the authenticator on a bounded pool behind a
//!   per-address rate limit with back-off, so password checks are no denial-of-service lever.
//! - [`acl_file`] and [`topic_rules`]: mosquitto-style ACL files, reloadable at run time.
//! - [`scram`]: SCRAM-SHA-256 (RFC 5802 / RFC 7677), a sans-IO mechanism.
//!
//! ACLs compose: [`AllOf`] asks several (the built-in [`DefaultAcl`], the ACL file, a
//! per-tenant hook) and allows only what every one allows.

pub mod acl_file;
pub mod password;
pub mod rate_limit;
pub mod scram;
pub mod topic_rules;
pub mod verifier;

use std::sync::Arc;

use switchboard_proto::ReasonCode;

pub use acl_file::{AclError, FileAcl};
pub use password::{PasswordAuth, PasswordFileError, hash_password};
pub use scram::{ScramClient, ScramCredential, ScramCredentials, ScramError, ScramServer};
pub use verifier::{Attempt, Verifier};

/// Credentials from CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// Subject common name of a client certificate that TLS already verified against the
    /// configured client CA.
    pub cert_user: Option<&'a str>,
}

/// Who a connection is, once authenticated. More fields will come (tenant, ...): build it
/// with `Identity { username, ..Default::default() }` so additions stay compatible.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub username: Option<String>,
    pub anonymous: bool,
    /// The client identifier of the connection (the one the broker assigned, if the client
    /// sent none); `%c` in ACL patterns.
    pub client_id: String,
    /// How the client's topics map into the broker's (its tenant; default: unmapped).
    pub namespace: crate::namespace::Namespace,
    /// Set for a device logged in as an IM user (token or directory password).
    pub im: Option<Arc<crate::im::ImLogin>>,
}

/// Decides whether a client may connect. Called off the async runtime (password hashing
/// is deliberately slow), so implementations may block briefly.
pub trait Authenticator: Send + Sync + 'static {
    /// `Err` carries the CONNACK reason: 0x86 bad user name or password, 0x87 not
    /// authorized, 0x8A banned...
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Identity, ReasonCode>;
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    /// The topic is the filter as the client sent it, `$share/{group}/{filter}` included
    /// (see [`split_share`]).
    Subscribe,
}

/// Decides per topic. Called on the hot path: keep it cheap.
pub trait Acl: Send + Sync + 'static {
    fn allowed(&self, who: &Identity, action: Action, topic: &str) -> bool;
}

/// Splits `$share/{group}/{filter}` into `(Some(group), filter)`; other filters are
/// returned whole with `None`.
pub fn split_share(raw: &str) -> (Option<&str>, &str) {
    match raw
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((group, filter)) => (Some(group), filter),
        None => (None, raw),
    }
}

/// The default ACL: everything except publishing to broker topics (`$SYS/...` and any
/// other topic starting with `$`), which only the broker may do; and services (the
/// `$service` login) may publish to the prefixes of [`SERVICE_PUBLISH`]: push jobs and
/// operator requests to the push worker, and answers to another service's requests.
#[derive(Debug, Default)]
pub struct DefaultAcl;

/// `$` topics a service may publish to.
pub const SERVICE_PUBLISH: [&str; 3] = ["$im/push/", "$im/push-ctl/", "$im/svc/"];

impl Acl for DefaultAcl {
    fn allowed(&self, who: &Identity, action: Action, topic: &str) -> bool {
        if action != Action::Publish || !topic.starts_with('$') {
            return true;
        }
        who.namespace == crate::namespace::Namespace::Service
            && SERVICE_PUBLISH.iter().any(|p| topic.starts_with(p))
    }
}

/// Allows what every one of its ACLs allows (none: everything). The broker composes its
/// base ACL with the ACL file this way; the IM layer adds its per-tenant hook the same way.
#[derive(Clone, Default)]
pub struct AllOf(pub Vec<Arc<dyn Acl>>);

impl AllOf {
    /// Adds `acl` to the chain.
    pub fn with(mut self, acl: Arc<dyn Acl>) -> Self {
        self.0.push(acl);
        self
    }
}

impl std::fmt::Debug for AllOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AllOf({} ACLs)", self.0.len())
    }
}

impl Acl for AllOf {
    fn allowed(&self, who: &Identity, action: Action, topic: &str) -> bool {
        self.0.iter().all(|a| a.allowed(who, action, topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DenyTopic(&'static str);

    impl Acl for DenyTopic {
        fn allowed(&self, _who: &Identity, _action: Action, topic: &str) -> bool {
            topic != self.0
        }
    }

    #[test]
    fn only_services_publish_to_the_push_workers_topics() {
        let service = Identity {
            namespace: crate::namespace::Namespace::Service,
            ..Identity::default()
        };
        let device = Identity::default();
        for t in ["$im/push/7", "$im/push-ctl/test", "$im/svc/gw/replies"] {
            assert!(DefaultAcl.allowed(&service, Action::Publish, t), "{t}");
            assert!(!DefaultAcl.allowed(&device, Action::Publish, t), "{t}");
        }
        assert!(!DefaultAcl.allowed(&service, Action::Publish, "$SYS/broker/uptime"));
        assert!(DefaultAcl.allowed(&device, Action::Subscribe, "$SYS/#"));
    }

    #[test]
    fn all_of_needs_every_acl_to_agree() {
        let acl = AllOf::default()
            .with(Arc::new(DefaultAcl))
            .with(Arc::new(DenyTopic("tenant/b")));
        let who = Identity::default();
        assert!(acl.allowed(&who, Action::Publish, "tenant/a"));
        assert!(!acl.allowed(&who, Action::Publish, "tenant/b"));
        assert!(!acl.allowed(&who, Action::Publish, "$SYS/x"));
        assert!(acl.allowed(&who, Action::Subscribe, "$SYS/#"));
    }

    #[test]
    fn split_share_separates_group_and_filter() {
        assert_eq!(split_share("$share/g/a/+"), (Some("g"), "a/+"));
        assert_eq!(split_share("a/b"), (None, "a/b"));
        assert_eq!(split_share("$share/g"), (None, "$share/g"));
    }
}
