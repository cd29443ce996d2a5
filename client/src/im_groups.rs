//! Group conveniences of the IM client (`docs/im/groups.md`): typed wrappers over
//! [`ImClient::request`] for the most used `group/...` requests. Any other group request
//! can be sent with `request("group/{op}", &req)`.

use switchboard_proto::im;

use crate::im::{ImClient, ImError};

impl ImClient {
    /// Creates a group (`group_id` "" for a generated one) with `members` besides you.
    pub async fn create_group(
        &self,
        group_id: &str,
        name: &str,
        join_mode: im::JoinMode,
        members: &[&str],
    ) -> Result<im::GroupResponse, ImError> {
        let req = im::CreateGroupRequest {
            group_id: group_id.into(),
            name: name.into(),
            join_mode: join_mode as i32,
            members: members.iter().map(|m| m.to_string()).collect(),
            ..im::CreateGroupRequest::default()
        };
        self.request("group/create", &req).await
    }

    /// Sends a text message to a group.
    pub async fn send_group_text(
        &self,
        group_id: &str,
        client_msg_id: &str,
        text: &str,
    ) -> Result<im::SendResponse, ImError> {
        self.send(im::SendRequest {
            to: group_id.into(),
            conv_type: im::ConvType::Group as i32,
            client_msg_id: client_msg_id.into(),
            content: Some(im::Content {
                body: Some(im::content::Body::Text(im::Text { text: text.into() })),
            }),
            ..im::SendRequest::default()
        })
        .await
    }

    /// Asks to join a group: a member at once (public group) or a pending request.
    pub async fn join_group(
        &self,
        group_id: &str,
        message: &str,
    ) -> Result<im::JoinGroupResponse, ImError> {
        let req = im::JoinGroupRequest {
            group_id: group_id.into(),
            message: message.into(),
        };
        self.request("group/join", &req).await
    }

    /// Leaves a group.
    pub async fn leave_group(&self, group_id: &str) -> Result<(), ImError> {
        let req = im::GroupRef {
            group_id: group_id.into(),
        };
        self.request::<_, im::Ack>("group/leave", &req)
            .await
            .map(|_| ())
    }

    /// The groups you are a member of, one page.
    pub async fn my_groups(&self, page_token: &str) -> Result<im::MyGroupsResponse, ImError> {
        let req = im::MyGroupsRequest {
            page_token: page_token.into(),
            limit: 0,
        };
        self.request("group/mine", &req).await
    }
}
