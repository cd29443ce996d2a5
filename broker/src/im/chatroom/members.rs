//! Chatroom membership: devices joining and leaving rooms (a device's live connection is
//! what joins), the per-connection index that a disconnection walks, and the member list
//! (in a cluster: the members on the node asked; `total` and every count: all nodes).

use super::*;

impl ImService {
    /// Device `client_id` enters a room: it gets the room and its last messages.
    pub(in crate::im) fn room_join(
        &self,
        login: &ImLogin,
        client_id: &str,
        req: im::RoomJoinRequest,
    ) -> Result<im::RoomJoinResponse, ImError> {
        let room = self.room(login.tenant, &req.room)?;
        let b = self
            .broker()
            .ok_or_else(|| ImError::Unavailable("broker stopping".into()))?;
        let (conn_id, mailbox) = b
            .live_mailbox(&crate::sessions::tenant_session_key(
                login.tenant,
                client_id,
            ))
            .ok_or_else(|| ImError::Unavailable("the device's connection is gone".into()))?;
        let now = now_ms();
        // Listed first, so that a disconnection from now on finds the room.
        {
            let mut by_conn = self.rooms.by_conn.lock();
            let list = by_conn.entry(conn_id).or_default();
            if !list.iter().any(|r| Arc::ptr_eq(r, &room)) {
                list.push(room.clone());
            }
        }
        let mut st = room.state.lock();
        let refuse = if st.gone {
            Some(ImError::NotFound(format!("room {}", room.id)))
        } else if let Some(until) = st.blocks.get(&login.account).filter(|u| **u > now) {
            Some(ImError::Forbidden(format!(
                "blocked from room {} until {until} (Unix ms)",
                room.id
            )))
        } else if !st.members.contains_key(&login.account)
            && st.total() >= st.settings.max_members as u64
        {
            Some(ImError::Conflict(format!("room {} is full", room.id)))
        } else {
            None
        };
        if let Some(e) = refuse {
            drop(st);
            self.forget_conn_room(conn_id, &room);
            return Err(e);
        }
        let mut stale = Vec::new();
        if let std::collections::hash_map::Entry::Vacant(e) = st.conns.entry(conn_id) {
            e.insert(Conn {
                account: login.account.clone(),
                mailbox,
                topic: inbox_topic(login.tenant, login.uid),
            });
            st.idle_gen += 1;
            let new_member = match st.members.get_mut(&login.account) {
                Some(m) => {
                    m.devices += 1;
                    false
                }
                None => {
                    st.members.insert(
                        login.account.clone(),
                        Member {
                            joined_ms: now,
                            devices: 1,
                        },
                    );
                    true
                }
            };
            if new_member && st.settings.notify_members {
                let mut ev = new_event(room_event::Kind::Joined, &room.id);
                ev.targets = vec![login.account.clone()];
                ev.member_count = st.total();
                stale = st.tell(ev, None);
            }
        }
        let last =
            req.last
                .map_or(st.settings.history, |l| l.min(st.settings.history)) as usize;
        let skip = st.ring.len().saturating_sub(last);
        let recent = st.ring.iter().skip(skip).cloned().collect();
        let info = st.info(&room.id);
        drop(st);
        self.room_count_changed(&room);
        self.drop_stale(&room, stale);
        Ok(im::RoomJoinResponse {
            status: ok(),
            room: Some(info),
            recent,
        })
    }

    /// Device `client_id` leaves `room`.
    pub(super) fn room_leave(
        &self,
        login: &ImLogin,
        client_id: &str,
        id: &str,
    ) -> Result<(), ImError> {
        let room = self.room(login.tenant, id)?;
        let conn_id = self
            .broker()
            .and_then(|b| {
                b.live_mailbox(&crate::sessions::tenant_session_key(
                    login.tenant,
                    client_id,
                ))
            })
            .map(|(c, _)| c)
            .ok_or_else(|| ImError::Unavailable("the device's connection is gone".into()))?;
        if !self.leave_conn(&room, conn_id) {
            return Err(ImError::NotFound(format!(
                "this device is not in room {id}"
            )));
        }
        self.forget_conn_room(conn_id, &room);
        Ok(())
    }

    /// Removes device `conn_id` from `room` (events, idle clean-up); false if it was not in.
    pub(super) fn leave_conn(&self, room: &Arc<Room>, conn_id: u64) -> bool {
        let mut st = room.state.lock();
        let Some((account, user_left)) = st.remove_conn(conn_id) else {
            return false;
        };
        let mut stale = Vec::new();
        if user_left && st.settings.notify_members {
            let mut ev = new_event(room_event::Kind::Left, &room.id);
            ev.targets = vec![account];
            ev.member_count = st.total();
            stale = st.tell(ev, None);
        }
        let idle = (st.conns.is_empty() && st.remote.is_empty() && !st.gone)
            .then_some((st.idle_gen, st.settings.idle_ms));
        drop(st);
        if user_left {
            self.room_count_changed(room);
        }
        self.drop_stale(room, stale);
        if let Some((generation, after)) = idle {
            self.schedule_idle(room, generation, after);
        }
        true
    }

    pub(super) fn forget_conn_room(&self, conn_id: u64, room: &Arc<Room>) {
        let mut by_conn = self.rooms.by_conn.lock();
        if let Some(list) = by_conn.get_mut(&conn_id) {
            list.retain(|r| !Arc::ptr_eq(r, room));
            if list.is_empty() {
                by_conn.remove(&conn_id);
            }
        }
    }

    /// Removes devices found disconnected during a delivery.
    pub(super) fn drop_stale(&self, room: &Arc<Room>, stale: Vec<u64>) {
        for conn_id in stale {
            self.leave_conn(room, conn_id);
            self.forget_conn_room(conn_id, room);
        }
    }

    /// A page of the member list.
    pub(super) fn room_members(
        &self,
        tid: u64,
        id: &str,
        after: &str,
        limit: usize,
    ) -> Result<im::RoomMembersResponse, ImError> {
        let room = self.room(tid, id)?;
        let limit = if limit == 0 { 50 } else { limit.min(MAX_PAGE) };
        let now = now_ms();
        let st = room.state.lock();
        let range = st
            .members
            .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded));
        let members: Vec<im::RoomMember> = range
            .take(limit)
            .map(|(account, m)| im::RoomMember {
                account: account.clone(),
                joined_ms: m.joined_ms,
                devices: m.devices,
                gagged: st.gagged(account, now).is_some(),
                whitelisted: st.whitelist.contains(account),
            })
            .collect();
        let next = match members.last() {
            Some(last)
                if st
                    .members
                    .range::<str, _>((
                        std::ops::Bound::Excluded(last.account.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .next()
                    .is_some() =>
            {
                last.account.clone()
            }
            _ => String::new(),
        };
        Ok(im::RoomMembersResponse {
            status: ok(),
            members,
            total: st.total(),
            next,
        })
    }
}
