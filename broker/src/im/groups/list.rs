//! A tenant's groups, paged and searchable (the app server's `group/list`, used by the
//! console's operations page). Groups are read from the store in key order (tenant, group
//! id), one bounded scan page at a time: nothing holds every group of a tenant in memory,
//! and one call reads at most [`SCAN_BUDGET`] records, so a search that matches little
//! answers with a page token to go on from rather than walking the whole tenant.

use serde::Serialize;

use super::{GroupRecord, SCAN_PAGE, key, page_size};
use crate::im::{ImError, ImService};
use crate::store::Table;

/// Records read by one call at most (group records and pending join requests, which
/// share the table); past it the answer stops early with a page token.
const SCAN_BUDGET: usize = 10 * SCAN_PAGE;
/// Longest search text.
const MAX_QUERY: usize = 64;

/// One group in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(in crate::im) struct GroupListItem {
    pub group_id: String,
    pub name: String,
    pub member_count: u32,
    pub owner: String,
    pub created_ms: u64,
}

/// A page of groups; `next_page_token` is empty at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(in crate::im) struct GroupList {
    pub groups: Vec<GroupListItem>,
    pub next_page_token: String,
    /// The page stopped at the scan budget (a search over many groups): fewer than
    /// `limit` groups may have been returned, and more may follow.
    pub partial: bool,
}

impl ImService {
    /// Up to `limit` groups of tenant `tid` after group id `page_token`, by group id,
    /// whose id or name contains `query` (case-insensitive; empty: every group).
    pub(in crate::im) fn tenant_groups(
        &self,
        tid: u64,
        query: &str,
        page_token: &str,
        limit: u32,
    ) -> Result<GroupList, ImError> {
        if query.chars().count() > MAX_QUERY {
            return Err(ImError::BadRequest(format!(
                "search text longer than {MAX_QUERY} characters"
            )));
        }
        let query = query.to_lowercase();
        let limit = page_size(limit);
        let prefix = tid.to_be_bytes();
        let mut after = (!page_token.is_empty()).then(|| key::group(tid, page_token));
        let mut out = GroupList::default();
        let mut scanned = 0;
        let mut last_gid = String::new();
        loop {
            let page = self
                .store
                .scan(Table::Groups, &prefix, after.as_deref(), SCAN_PAGE)?;
            let exhausted = page.len() < SCAN_PAGE;
            for (k, v) in &page {
                scanned += 1;
                // Group records end in 0; pending requests (`gid 1 uid`) are skipped.
                let Some(gid) = k
                    .get(prefix.len()..k.len().saturating_sub(1))
                    .filter(|_| k.last() == Some(&0))
                    .and_then(|g| std::str::from_utf8(g).ok())
                else {
                    continue;
                };
                last_gid = gid.to_owned();
                let rec: GroupRecord = match serde_json::from_slice(v) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(tenant = tid, group = gid, error = %e, "corrupt group record skipped");
                        continue;
                    }
                };
                if !query.is_empty()
                    && !rec.id.to_lowercase().contains(&query)
                    && !rec.name.to_lowercase().contains(&query)
                {
                    continue;
                }
                if out.groups.len() == limit {
                    // One more matched: there is a next page, starting after the last one.
                    out.next_page_token = out
                        .groups
                        .last()
                        .map(|g| g.group_id.clone())
                        .unwrap_or_default();
                    return Ok(out);
                }
                let owner = self.account_of(tid, rec.owner)?.unwrap_or_default();
                out.groups.push(GroupListItem {
                    group_id: rec.id,
                    name: rec.name,
                    member_count: rec.member_count,
                    owner,
                    created_ms: rec.created_ms,
                });
            }
            if exhausted {
                return Ok(out);
            }
            if scanned >= SCAN_BUDGET && !last_gid.is_empty() {
                out.partial = true;
                out.next_page_token = last_gid;
                return Ok(out);
            }
            after = page.last().map(|(k, _)| k.clone());
        }
    }
}
