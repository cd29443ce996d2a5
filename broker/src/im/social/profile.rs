//! User profiles: display name, avatar URL and a bounded map of extra fields, set by the
//! user or the app server, read by anyone of the same tenant. A user without a profile
//! record has the name the directory gave it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchboard_proto::im;

use super::super::{ImError, ImService, now_ms};
use super::{key, tag};
use crate::store::{Op, Table};

const MAX_NAME: usize = 128;
const MAX_AVATAR: usize = 1024;
const MAX_EXTRA: usize = 32;
const MAX_EXTRA_KEY: usize = 64;
const MAX_EXTRA_VALUE: usize = 1024;

/// A profile as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct ProfileRecord {
    name: String,
    avatar_url: String,
    extra: BTreeMap<String, String>,
    updated_ms: u64,
}

impl ImService {
    /// The profile of user `account` of tenant `tid`.
    pub(crate) fn profile(&self, tid: u64, account: &str) -> Result<im::UserProfile, ImError> {
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let rec = match self
            .store
            .get(Table::Social, &key(tid, user.uid, tag::PROFILE, None))?
        {
            Some(v) => serde_json::from_slice(&v)
                .map_err(|e| ImError::Internal(format!("corrupt profile: {e}")))?,
            None => ProfileRecord {
                name: user.name.clone(),
                ..ProfileRecord::default()
            },
        };
        Ok(im::UserProfile {
            user: user.account,
            name: rec.name,
            avatar_url: rec.avatar_url,
            extra: rec.extra.into_iter().collect(),
            updated_ms: rec.updated_ms,
        })
    }

    /// Changes the fields given of user `account`'s profile (`extra` entries with an empty
    /// value are removed) and returns the result.
    pub(crate) async fn set_profile(
        &self,
        tid: u64,
        account: &str,
        name: Option<String>,
        avatar_url: Option<String>,
        extra: BTreeMap<String, String>,
    ) -> Result<im::UserProfile, ImError> {
        if name.as_ref().is_some_and(|n| n.len() > MAX_NAME) {
            return Err(ImError::BadRequest(format!(
                "name longer than {MAX_NAME} bytes"
            )));
        }
        if avatar_url.as_ref().is_some_and(|a| a.len() > MAX_AVATAR) {
            return Err(ImError::BadRequest(format!(
                "avatar_url longer than {MAX_AVATAR} bytes"
            )));
        }
        if extra.len() > MAX_EXTRA
            || extra
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > MAX_EXTRA_KEY || v.len() > MAX_EXTRA_VALUE)
        {
            return Err(ImError::BadRequest(format!(
                "extra: at most {MAX_EXTRA} entries, keys 1..={MAX_EXTRA_KEY} bytes, values ≤ {MAX_EXTRA_VALUE}"
            )));
        }
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let _guard = self.social.lock(tid, user.uid, user.uid).lock().await;
        let k = key(tid, user.uid, tag::PROFILE, None);
        let mut rec: ProfileRecord = match self.store.get(Table::Social, &k)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => ProfileRecord {
                name: user.name.clone(),
                ..ProfileRecord::default()
            },
        };
        if let Some(n) = name {
            rec.name = n;
        }
        if let Some(a) = avatar_url {
            rec.avatar_url = a;
        }
        for (k, v) in extra {
            if v.is_empty() {
                rec.extra.remove(&k);
            } else {
                rec.extra.insert(k, v);
            }
        }
        if rec.extra.len() > MAX_EXTRA {
            return Err(ImError::BadRequest(format!(
                "extra: at most {MAX_EXTRA} entries in all"
            )));
        }
        rec.updated_ms = now_ms();
        self.commit(vec![Op::Put {
            table: Table::Social,
            key: k,
            value: serde_json::to_vec(&rec).map_err(|e| ImError::Internal(e.to_string()))?,
        }])
        .await?;
        Ok(im::UserProfile {
            user: user.account,
            name: rec.name,
            avatar_url: rec.avatar_url,
            extra: rec.extra.into_iter().collect(),
            updated_ms: rec.updated_ms,
        })
    }
}
