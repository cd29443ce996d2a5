//! SDK conveniences for the organisation directory (`docs/im/org.md`): incremental
//! directory sync, the first-login password change, the caller's own record.

use switchboard_proto::im;

use crate::im::{ImClient, ImError};

/// Pages one `dir_sync_all` call reads at most.
const MAX_PAGES: usize = 10_000;

impl ImClient {
    /// Every directory change after `since_version` (0: the whole directory), all pages;
    /// returns the departments and members changed and the version to pass next time.
    pub async fn dir_sync_all(
        &self,
        since_version: u64,
    ) -> Result<(Vec<im::Department>, Vec<im::Member>, u64), ImError> {
        let (mut depts, mut members, mut version) = (Vec::new(), Vec::new(), since_version);
        for _ in 0..MAX_PAGES {
            let page: im::DirSyncResponse = self
                .request(
                    "dir/sync",
                    &im::DirSyncRequest {
                        since_version: version,
                        limit: 0,
                    },
                )
                .await?;
            depts.extend(page.departments);
            members.extend(page.members);
            version = page.version;
            if !page.more {
                return Ok((depts, members, version));
            }
        }
        Err(ImError::Decode("directory sync did not finish".into()))
    }

    /// Changes the password of a password login (required before anything else at the
    /// first login with a default password).
    pub async fn change_password(&self, old: &str, new: &str) -> Result<(), ImError> {
        let req = im::ChangePasswordRequest {
            old_password: old.into(),
            new_password: new.into(),
        };
        let _: im::Ack = self.request("dir/change_password", &req).await?;
        Ok(())
    }

    /// The caller's own directory record, and whether a password change is required.
    pub async fn me(&self) -> Result<im::MeResponse, ImError> {
        self.request("dir/me", &im::MeRequest {}).await
    }
}
