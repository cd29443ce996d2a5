//! Chatroom conveniences of the SDK (docs/im/chatrooms.md): join, leave, info, members,
//! send. Room messages and `RoomEvent`s arrive on the ordinary event stream.

use switchboard_proto::im;

use crate::im::{ImClient, ImError};

impl ImClient {
    /// Enters room `room` on this device; `last`: at most this many recent messages
    /// (`None`: the room's N).
    pub async fn join_room(
        &self,
        room: &str,
        last: Option<u32>,
    ) -> Result<im::RoomJoinResponse, ImError> {
        let req = im::RoomJoinRequest {
            room: room.into(),
            last,
        };
        self.request("room/join", &req).await
    }

    /// Leaves room `room` on this device.
    pub async fn leave_room(&self, room: &str) -> Result<(), ImError> {
        let req = im::RoomRequest { room: room.into() };
        self.request::<_, im::Ack>("room/leave", &req)
            .await
            .map(|_| ())
    }

    pub async fn room_info(&self, room: &str) -> Result<im::RoomInfo, ImError> {
        let req = im::RoomRequest { room: room.into() };
        let r: im::RoomInfoResponse = self.request("room/info", &req).await?;
        Ok(r.room.unwrap_or_default())
    }

    /// One page of the member list (`after`: the previous page's `next`).
    pub async fn room_members(
        &self,
        room: &str,
        after: &str,
        limit: u32,
    ) -> Result<im::RoomMembersResponse, ImError> {
        let req = im::RoomMembersRequest {
            room: room.into(),
            after: after.into(),
            limit,
        };
        self.request("room/members", &req).await
    }

    /// Sends `content` to room `room`.
    pub async fn send_room(
        &self,
        room: &str,
        client_msg_id: &str,
        content: im::Content,
    ) -> Result<im::SendResponse, ImError> {
        self.send(im::SendRequest {
            to: room.into(),
            conv_type: im::ConvType::Chatroom as i32,
            client_msg_id: client_msg_id.into(),
            content: Some(content),
            ..im::SendRequest::default()
        })
        .await
    }
}
