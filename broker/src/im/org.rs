//! The organisation directory (IM part 2, seed 000): the department tree, members with
//! their details, CSV import and export, incremental directory sync for clients.
//!
//! Not built yet: every request answers 404.

use serde_json::Value;

use super::{ImError, ImLogin, ImService};

/// In-memory state of the directory (caches).
#[derive(Debug, Default)]
pub struct Org {}

impl ImService {
    /// A client's request `$im/req/dir/{op}`.
    pub(super) async fn org_request(
        &self,
        _login: &ImLogin,
        op: &str,
        _payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        Err(ImError::NotFound(format!("no such request: dir/{op}")))
    }

    /// The app server's request `$im/admin/dir/{op}` (JSON).
    pub(super) async fn org_admin(&self, op: &str, _payload: &[u8]) -> Result<Value, ImError> {
        Err(ImError::NotFound(format!("no such request: dir/{op}")))
    }
}
