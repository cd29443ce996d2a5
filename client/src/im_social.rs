//! Conveniences of the IM API for contacts, blacklist, profiles and presence
//! (`social/...`, docs/im/social.md). Each is one [`ImClient::request`].

use switchboard_proto::im;

use crate::im::{ImClient, ImError};

impl ImClient {
    /// One `social/{op}` request about user `user` (friend_request, friend_accept,
    /// friend_reject, friend_delete, block, unblock).
    async fn social_user(&self, op: &str, user: &str, message: &str) -> Result<(), ImError> {
        let req = im::SocialUserRequest {
            user: user.to_owned(),
            message: message.to_owned(),
        };
        self.request::<_, im::Ack>(&format!("social/{op}"), &req)
            .await
            .map(|_| ())
    }

    /// Asks `user` to be friends, with a greeting (≤ 256 bytes).
    pub async fn friend_request(&self, user: &str, greeting: &str) -> Result<(), ImError> {
        self.social_user("friend_request", user, greeting).await
    }

    /// Accepts `user`'s friend request.
    pub async fn friend_accept(&self, user: &str) -> Result<(), ImError> {
        self.social_user("friend_accept", user, "").await
    }

    /// Rejects `user`'s friend request.
    pub async fn friend_reject(&self, user: &str) -> Result<(), ImError> {
        self.social_user("friend_reject", user, "").await
    }

    /// Ends the friendship with `user` (both sides).
    pub async fn friend_delete(&self, user: &str) -> Result<(), ImError> {
        self.social_user("friend_delete", user, "").await
    }

    /// Blacklists `user`: its 1:1 messages and friend requests are refused (405).
    pub async fn block(&self, user: &str) -> Result<(), ImError> {
        self.social_user("block", user, "").await
    }

    /// Takes `user` off the blacklist.
    pub async fn unblock(&self, user: &str) -> Result<(), ImError> {
        self.social_user("unblock", user, "").await
    }

    /// One page of `friends`, `friend_requests` or `blocked` (`after`: the previous page's
    /// `next`, "" for the first; `limit` 0: 100).
    pub async fn contacts(
        &self,
        list: &str,
        after: &str,
        limit: u32,
    ) -> Result<im::SocialContactList, ImError> {
        let req = im::SocialListRequest {
            after: after.to_owned(),
            limit,
        };
        self.request(&format!("social/{list}"), &req).await
    }

    /// Watches (`add`) and stops watching (`remove`) users' presence; the answer has the
    /// presence of those added. Subscriptions end when the user's last device goes offline.
    pub async fn subscribe_presence(
        &self,
        add: &[&str],
        remove: &[&str],
    ) -> Result<Vec<im::Presence>, ImError> {
        let req = im::SubscribePresenceRequest {
            add: add.iter().map(|s| (*s).to_owned()).collect(),
            remove: remove.iter().map(|s| (*s).to_owned()).collect(),
        };
        let r: im::PresenceResponse = self.request("social/subscribe_presence", &req).await?;
        Ok(r.presences)
    }

    /// The presence of up to 100 users.
    pub async fn presence(&self, users: &[&str]) -> Result<Vec<im::Presence>, ImError> {
        let req = im::PresenceRequest {
            users: users.iter().map(|s| (*s).to_owned()).collect(),
        };
        let r: im::PresenceResponse = self.request("social/presence", &req).await?;
        Ok(r.presences)
    }

    /// Who may see this user's presence.
    pub async fn set_privacy(&self, visibility: im::PresenceVisibility) -> Result<(), ImError> {
        let req = im::PrivacyRequest {
            visibility: visibility as i32,
        };
        self.request::<_, im::Ack>("social/set_privacy", &req)
            .await
            .map(|_| ())
    }

    /// The profile of `user` ("" for yourself).
    pub async fn profile(&self, user: &str) -> Result<im::UserProfile, ImError> {
        let req = im::SocialUserRequest {
            user: user.to_owned(),
            message: String::new(),
        };
        let r: im::ProfileResponse = self.request("social/profile", &req).await?;
        Ok(r.profile.unwrap_or_default())
    }

    /// Changes this user's profile (only the fields given) and returns it.
    pub async fn set_profile(
        &self,
        req: im::SetProfileRequest,
    ) -> Result<im::UserProfile, ImError> {
        let r: im::ProfileResponse = self.request("social/set_profile", &req).await?;
        Ok(r.profile.unwrap_or_default())
    }
}
