"""An independent IM client written from docs/protocol.md: paho-mqtt (MQTT 5) and protobuf
classes generated at run time from proto/schema/switchboard/im/v1/*.proto.

Usage: im_client.py --port PORT --proto-dir DIR --tenant-users JSON
  JSON: {"alice": {"uid": 1, "token": "sb1..."}, "bob": ..., "carol": ...,
         "banned_token": "...", "revoked_token": "...", "service_secret": "..."}
(carol never logs in: messages to her make push jobs; bob has a system notice waiting.)
Prints one line per check and a closing "N passed, M failed" line; exits non-zero on
failure. Checks marked "known issue" report what the service does without failing.
"""

import argparse
import importlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10.0
QUIET = 0.5  # how long "no event of this kind" is watched for (negative checks only)
RESULTS = {"passed": 0, "failed": 0}
pb = None  # the generated module


def load_proto(proto_dir):
    """Generates the Python classes with grpc_tools.protoc into a temporary directory."""
    global pb
    out = tempfile.mkdtemp(prefix="sb-im-proto-")
    # im.proto imports the other files of the package (common.proto publicly, so its
    # types are reachable through im_pb2): generate them all.
    files = sorted("switchboard/im/v1/" + f
                   for f in os.listdir(os.path.join(proto_dir, "switchboard/im/v1"))
                   if f.endswith(".proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir, "--python_out=" + out]
        + files,
        check=True,
    )
    sys.path.insert(0, out)
    pb = importlib.import_module("switchboard.im.v1.im_pb2")


def check(name, cond, detail=""):
    if cond:
        RESULTS["passed"] += 1
        print(f"ok   {name}")
    else:
        RESULTS["failed"] += 1
        print(f"FAIL {name} {detail}")
    sys.stdout.flush()


def known_issue(name, fixed, detail=""):
    """A documented service bug: reported, never counted as a failure."""
    print(f"{'XPASS' if fixed else 'xfail'} {name} (known issue) {detail}")
    sys.stdout.flush()


class Device:
    """One IM device: an MQTT 5 connection logged in with a token (protocol.md 2.2)."""

    def __init__(self, port, client_id, password, username=None, subscribe=True):
        self.client_id = client_id
        self.events = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.disconnects = queue.Queue()
        self.lock = threading.Condition()
        self.answers = {}  # correlation data -> payload
        self.pubacks = {}  # mid -> reason code value
        self.next_id = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        self.c.on_connect = lambda c, u, f, rc, p: self.connacks.put(rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([r.value for r in rcs])
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        # No automatic reconnects while the suite runs (a kicked phone must stay out).
        self.c.reconnect_delay_set(min_delay=60, max_delay=120)
        if password is not None:
            self.c.username_pw_set(username, password)
        self.c.connect("127.0.0.1", port, keepalive=30, clean_start=True)
        self.c.loop_start()
        self.rc = self.connacks.get(timeout=WAIT)
        if self.rc == 0 and subscribe:
            self.c.subscribe([("$im/inbox", mqtt.SubscribeOptions(qos=1)),
                              ("$im/resp/#", mqtt.SubscribeOptions(qos=1))])
            self.granted = self.subacks.get(timeout=WAIT)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()

    def _on_message(self, c, u, m):
        if m.topic == "$im/inbox":
            ev = pb.Event()
            ev.ParseFromString(m.payload)
            self.events.put(ev)
        elif m.topic.startswith("$im/resp/"):
            corr = getattr(m.properties, "CorrelationData", None)
            with self.lock:
                self.answers[bytes(corr) if corr is not None else None] = m.payload
                self.lock.notify_all()
        else:
            self.events.put(("plain", m.topic, m.payload))

    def _on_disconnect(self, c, u, f, rc, p):
        with self.lock:
            self.disconnects.put(rc.value)
            self.lock.notify_all()

    def _on_publish(self, c, u, mid, rc, p):
        with self.lock:
            self.pubacks[mid] = rc.value
            self.lock.notify_all()

    def _wait(self, table, key):
        with self.lock:
            if not self.lock.wait_for(lambda: key in table, timeout=WAIT):
                gone = list(self.disconnects.queue)
                raise TimeoutError(f"{self.client_id}: nothing for {key!r} within {WAIT}s"
                                   f" (disconnects: {gone})")
            return table.pop(key)

    def raw(self, topic, payload, response_topic="$im/resp/r", qos=1, answered=True):
        """Publishes a request; returns (PUBACK reason code, answer payload or None).
        With `answered` False, watches for an answer for QUIET seconds only."""
        with self.lock:
            self.next_id += 1
            corr = self.next_id.to_bytes(8, "big")
        props = Properties(PacketTypes.PUBLISH)
        if response_topic is not None:
            props.ResponseTopic = response_topic
            props.CorrelationData = corr
        info = self.c.publish(topic, payload, qos=qos, properties=props)
        code = self._wait(self.pubacks, info.mid) if qos > 0 else None
        if response_topic is None:
            return code, None
        if not answered:
            with self.lock:
                self.lock.wait_for(lambda: corr in self.answers, timeout=QUIET)
                return code, self.answers.pop(corr, None)
        return code, self._wait(self.answers, corr)

    def answer_then_ack_or_drop(self, topic, payload):
        """Publishes a request, waits for its answer, then for its PUBACK or the end of the
        connection: returns (answer payload, PUBACK code or None, disconnected)."""
        with self.lock:
            self.next_id += 1
            corr = self.next_id.to_bytes(8, "big")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "$im/resp/r"
        props.CorrelationData = corr
        info = self.c.publish(topic, payload, qos=1, properties=props)
        answer = self._wait(self.answers, corr)
        with self.lock:
            self.lock.wait_for(lambda: info.mid in self.pubacks
                               or not self.disconnects.empty(), timeout=WAIT)
            return answer, self.pubacks.pop(info.mid, None), not self.disconnects.empty()

    def request(self, op, msg, answer_type):
        """protocol.md 4: request, answer decoded as `answer_type`, PUBACK reason code."""
        code, payload = self.raw("$im/req/" + op, msg.SerializeToString())
        ans = answer_type()
        ans.ParseFromString(payload)
        return ans, code

    def send_text(self, to, text, cmid=None, **kw):
        req = pb.SendRequest(to=to, client_msg_id=cmid or uuid.uuid4().hex,
                             content=pb.Content(text=pb.Text(text=text)), **kw)
        return self.request("send", req, pb.SendResponse)

    def event(self, kind, pred=lambda e: True, timeout=WAIT):
        """The next event of `kind` that `pred` accepts, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if isinstance(ev, tuple):
                continue
            if ev.WhichOneof("kind") == kind and pred(getattr(ev, kind)):
                return getattr(ev, kind)

    def drain(self):
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return

    def sync_all(self, cursors, limit):
        """protocol.md 7.2: pages until `more` is false; returns (messages, pages, last)."""
        got, pages = [], 0
        while True:
            req = pb.SyncRequest(limit=limit)
            for conv, seq in cursors.items():
                req.cursors.add(conversation=conv, seq=seq)
            resp, code = self.request("sync", req, pb.SyncResponse)
            if resp.status.code != 0:
                raise RuntimeError(f"sync failed: {resp.status}")
            pages += 1
            for m in resp.messages:
                cursors[m.conversation] = max(cursors.get(m.conversation, 0), m.seq)
                got.append(m)
            if not resp.more or pages > 100:
                return got, pages, resp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--setup", required=True, help="JSON (see the module docstring)")
    args = ap.parse_args()
    load_proto(args.proto_dir)
    s = json.loads(args.setup)
    port = args.port
    A, B, C = s["alice"], s["bob"], s["carol"]
    devices = []

    def dev(*a, **kw):
        d = Device(port, *a, **kw)
        devices.append(d)
        return d

    try:
        run(s, port, A, B, C, dev)
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, reported
        import traceback
        traceback.print_exc()
        check("suite ran to the end", False, repr(e))
    finally:
        for d in devices:
            try:
                d.close()
            except Exception:  # noqa: BLE001
                pass
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] else 0)


def run(s, port, A, B, C, dev):
    # ---- 2. login ------------------------------------------------------------------
    alice = dev("alice-phone", A["token"], username="alice")
    check("token login: CONNACK 0x00", alice.rc == 0, alice.rc)
    check("subscribe $im/inbox and $im/resp/# granted QoS 1", alice.granted == [1, 1],
          alice.granted)
    alice2 = dev("alice-pc", A["token"], username="alice")
    check("second device of the same user logs in", alice2.rc == 0 and alice2.granted == [1, 1],
          (alice2.rc, alice2.granted))
    bob = dev("bob-phone", B["token"], username="bob")
    bob2 = dev("bob-pad", B["token"], username="bob")
    check("bob's two devices log in", bob.rc == 0 and bob2.rc == 0, (bob.rc, bob2.rc))

    # (paho sends a password only with a user name: every login here names the account.)
    failures = 0
    tampered = A["token"][:-2] + ("AA" if not A["token"].endswith("AA") else "BB")
    for name, cid, pw, user, want in [
        ("tampered token: 0x86", "x-1", tampered, "alice", 0x86),
        ("not a token: 0x86", "x-2", "sb1.garbage", "alice", 0x86),
        ("user name is not the token's account: 0x86", "x-3", A["token"], "bob", 0x86),
        ("empty user name with a token: accepted (the token names the account)", "x-3b", A["token"], "", 0x00),
        ("revoked token: 0x86", "x-4", s["revoked_token"], "dave", 0x86),
        ("banned user: 0x8A", "x-5", s["banned_token"], "erin", 0x8A),
        ("client id with '/': 0x85", "x/6", A["token"], "alice", 0x85),
        ("client id of 129 bytes: 0x85", "x" * 129, A["token"], "alice", 0x85),
        ("client id of 128 bytes: 0x00", "x" * 128, A["token"], "alice", 0x00),
    ]:
        d = dev(cid, pw, username=user, subscribe=False)
        d.close()  # no reconnect attempts
        check("CONNACK " + name, d.rc == want, hex(d.rc))
        if want != 0:
            failures += 1
        if failures == 2:
            # Three consecutive failed logins from one address start a back-off (0x9F,
            # protocol.md 2.4); a successful login clears the count.
            failures = 0
            dev(f"reset-{cid[:8]}", A["token"], username="alice", subscribe=False).close()

    # ---- 3. topics -----------------------------------------------------------------
    alice.c.subscribe([(f"$im/t/{s['tenant']}/u/{B['uid']}", mqtt.SubscribeOptions(qos=1))])
    check("subscribing another user's internal inbox is refused (0x87)",
          alice.subacks.get(timeout=WAIT) == [0x87])
    code, _ = alice.raw("$im/inbox", b"x", response_topic=None)
    check("publishing to $im/inbox is refused (PUBACK 0x87)", code == 0x87, hex(code))
    # Plain topics are the tenant's own.
    bob.c.subscribe([("chat/plain", mqtt.SubscribeOptions(qos=1))])
    bob.subacks.get(timeout=WAIT)
    alice.c.publish("chat/plain", b"hi", qos=1)
    got = None
    try:
        while True:
            ev = bob.events.get(timeout=WAIT)
            if isinstance(ev, tuple):
                got = ev
                break
    except queue.Empty:
        pass
    check("plain topics work inside the tenant, prefix invisible",
          got is not None and got[1] == "chat/plain" and got[2] == b"hi", got)

    # ---- 4.1 send ------------------------------------------------------------------
    conv = f"p:{min(A['uid'], B['uid'])}:{max(A['uid'], B['uid'])}"
    first_id = uuid.uuid4().hex
    r, code = alice.send_text("bob", "hello 1", cmid=first_id)
    check("send: PUBACK 0x00, status 0, seq 1, 1:1 id lower uid first",
          code == 0 and r.status.code == 0 and r.seq == 1 and r.conversation == conv
          and not r.duplicate, (code, r))
    first_time = r.server_time_ms
    m = bob.event("message")
    check("peer receives the message event",
          m is not None and m.seq == 1 and m.conversation == conv and m.content.text.text
          == "hello 1" and getattr(m, "from") == "alice" and m.to == "bob"
          and m.conv_type == pb.CONV_TYPE_PRIVATE and m.client_msg_id == first_id, m)
    m2 = bob2.event("message")
    check("peer's second device receives it too", m2 is not None and m2.seq == 1, m2)
    m3 = alice2.event("message")
    check("sender's other device receives it", m3 is not None and m3.seq == 1, m3)
    u = bob.event("unread", lambda u: u.conversation == conv)
    check("recipient gets unread 1 (total 2 with the system notice)",
          u is not None and u.unread == 1 and u.total == 2 and u.read_seq == 0, u)

    r, code = alice.send_text("bob", "hello 1 again", cmid=first_id)
    check("resend with the same client_msg_id: duplicate, original seq and time",
          code == 0 and r.status.code == 0 and r.duplicate and r.seq == 1
          and r.server_time_ms == first_time, (code, r))
    for i in (2, 3):
        r, code = alice.send_text("bob", f"hello {i}")
        check(f"next send gets seq {i}", code == 0 and r.seq == i and not r.duplicate, r)
    m = bob.event("message")
    check("no event for the duplicate: the next message event is seq 2",
          m is not None and m.seq == 2, m)
    bob.event("message", lambda m: m.seq == 3)

    # The sender's own read position moved with the send.
    convs, _ = alice.request("conversations", pb.ConversationsRequest(),
                             pb.ConversationsResponse)
    mine = [c for c in convs.conversations if c.id == conv]
    check("sending marks the sender's read position (unread 0, read_seq = max_seq)",
          mine and mine[0].read_seq == 3 and mine[0].unread == 0 and mine[0].max_seq == 3
          and mine[0].peer == "bob", convs)

    # ---- 7. sync -------------------------------------------------------------------
    cursors = {}
    msgs, pages, last = bob.sync_all(cursors, 2)
    sysconv = f"s:{B['uid']}"
    by_conv = {}
    for m in msgs:
        by_conv.setdefault(m.conversation, []).append(m.seq)
    check("sync from empty cursors, limit 2: several pages, every message once, in order",
          pages >= 2 and by_conv.get(conv) == [1, 2, 3] and by_conv.get(sysconv) == [1],
          (pages, by_conv))
    check("sync: system notice from the system (from '', conv_type SYSTEM)",
          any(m.conversation == sysconv and getattr(m, "from") == ""
              and m.conv_type == pb.CONV_TYPE_SYSTEM for m in msgs), msgs)
    listed = {c.id: c for c in last.conversations}
    check("sync: conversation list with unread counts and total",
          set(listed) == {conv, sysconv} and listed[conv].unread == 3
          and listed[sysconv].unread == 1 and last.unread_total == 4
          and listed[conv].peer_read_seq == 3 and listed[conv].last.seq == 3, last)
    again, pages2, last2 = bob.sync_all(dict(cursors), 2)
    check("sync from current cursors: nothing new, more false",
          again == [] and pages2 == 1 and not last2.more, again)

    req = pb.SyncRequest(cursors=[pb.Cursor(conversation=conv, seq=99)])
    r, code = bob.request("sync", req, pb.SyncResponse)
    check("sync: cursor from the future -> 400, PUBACK 0x99",
          r.status.code == 400 and code == 0x99, (code, r.status))
    unknown = f"p:{B['uid']}:{max(A['uid'], B['uid'], C['uid']) + 100}"
    r, code = bob.request("sync", pb.SyncRequest(cursors=[pb.Cursor(conversation=unknown)]),
                          pb.SyncResponse)
    check("sync: unknown conversation -> 404, PUBACK 0x83",
          r.status.code == 404 and code == 0x83, (code, r.status))
    other = f"p:{min(A['uid'], C['uid'])}:{max(A['uid'], C['uid'])}"
    r, code = bob.request("sync", pb.SyncRequest(cursors=[pb.Cursor(conversation=other)]),
                          pb.SyncResponse)
    check("sync: someone else's conversation -> 403, PUBACK 0x87",
          r.status.code == 403 and code == 0x87, (code, r.status))
    r, code = bob.request("sync", pb.SyncRequest(cursors=[pb.Cursor(conversation="p:9:3")]),
                          pb.SyncResponse)
    check("sync: malformed conversation id -> 400", r.status.code == 400, r.status)

    # ---- 4.3 history ---------------------------------------------------------------
    h, _ = bob.request("history", pb.HistoryRequest(conversation=conv, limit=2),
                       pb.HistoryResponse)
    check("history: newest first, more", [m.seq for m in h.messages] == [3, 2] and h.more, h)
    h, _ = bob.request("history", pb.HistoryRequest(conversation=conv, before_seq=2, limit=2),
                       pb.HistoryResponse)
    check("history before 2: [1], no more", [m.seq for m in h.messages] == [1]
          and not h.more, h)

    # ---- 4.5/4.6 delivered, read ---------------------------------------------------
    alice.drain()
    a, code = bob.request("delivered", pb.ReadRequest(conversation=conv, seq=3), pb.Ack)
    check("delivered: ok", a.status.code == 0 and code == 0, (code, a))
    rc = alice.event("receipt")
    check("sender gets a DELIVERED receipt",
          rc is not None and rc.kind == pb.Receipt.KIND_DELIVERED and rc.seq == 3
          and rc.by == "bob" and rc.conversation == conv, rc)
    a, code = bob.request("read", pb.ReadRequest(conversation=conv, seq=4), pb.Ack)
    check("read past the end -> 400", a.status.code == 400 and code == 0x99, (code, a))
    bob2.drain()
    a, code = bob.request("read", pb.ReadRequest(conversation=conv, seq=3), pb.Ack)
    check("read: ok", a.status.code == 0 and code == 0, (code, a))
    u = bob2.event("unread", lambda u: u.conversation == conv)
    check("other device: unread 0, read_seq 3, total 1 (the system notice)",
          u is not None and u.unread == 0 and u.read_seq == 3 and u.total == 1, u)
    rc = alice.event("receipt")
    check("sender gets a READ receipt",
          rc is not None and rc.kind == pb.Receipt.KIND_READ and rc.seq == 3, rc)
    bob.request("read", pb.ReadRequest(conversation=sysconv, seq=1), pb.Ack)
    u = bob2.event("unread", lambda u: u.conversation == sysconv)
    check("read everything: the other device sees total 0",
          u is not None and u.unread == 0 and u.total == 0, u)
    a, code = bob.request("read", pb.ReadRequest(conversation=conv, seq=2), pb.Ack)
    check("read backwards: ok, no event", a.status.code == 0
          and bob2.event("unread", timeout=QUIET) is None, a)

    # ---- 4.8 typing ----------------------------------------------------------------
    a, _ = alice.request("typing", pb.TypingRequest(conversation=conv), pb.Ack)
    t = bob.event("typing")
    check("typing reaches the peer",
          a.status.code == 0 and t is not None and t.conversation == conv
          and getattr(t, "from") == "alice", t)

    # ---- 4.7 recall ----------------------------------------------------------------
    a, code = bob.request("recall", pb.RecallRequest(conversation=conv, seq=3), pb.Ack)
    check("recall someone else's message -> 403", a.status.code == 403 and code == 0x87,
          (code, a))
    a, code = alice.request("recall", pb.RecallRequest(conversation=conv, seq=99), pb.Ack)
    check("recall a missing message -> 404", a.status.code == 404 and code == 0x83, (code, a))
    bob.drain()
    alice2.drain()
    a, code = alice.request("recall", pb.RecallRequest(conversation=conv, seq=3), pb.Ack)
    check("recall own message: ok", a.status.code == 0 and code == 0, (code, a))
    rv = bob.event("recalled")
    check("peer gets recalled",
          rv is not None and rv.seq == 3 and rv.by == "alice" and rv.conversation == conv, rv)
    check("sender's other device gets recalled", alice2.event("recalled") is not None)
    h, _ = bob.request("history", pb.HistoryRequest(conversation=conv, limit=1),
                       pb.HistoryResponse)
    hm = h.messages[0] if h.messages else None
    check("recalled message keeps its seq, content removed",
          hm is not None and hm.seq == 3 and hm.recalled and not hm.HasField("content"), hm)
    r, _ = alice.send_text("bob", "after recall")
    check("recall takes no seq: the next message is seq 4", r.seq == 4, r)

    # ---- 9. burn after read ----------------------------------------------------------
    r, _ = alice.send_text("bob", "secret", burn_after_read=True)
    burn_seq = r.seq
    bob.event("message", lambda m: m.seq == burn_seq)
    alice.drain()
    bob.request("read", pb.ReadRequest(conversation=conv, seq=burn_seq), pb.Ack)
    bm = alice.event("message", lambda m: m.seq == burn_seq and m.burned)
    check("burn after read: the message comes again burned, no content",
          bm is not None and bm.burned and not bm.HasField("content"), bm)

    # ---- 4.9 update_conversation ----------------------------------------------------
    bob2.drain()
    a, _ = bob.request("update_conversation",
                       pb.UpdateConversationRequest(conversation=conv, pinned=True), pb.Ack)
    cv = bob2.event("conversation")
    check("update_conversation: other device gets the new view",
          a.status.code == 0 and cv is not None and cv.id == conv and cv.pinned, cv)

    # ---- errors and limits ----------------------------------------------------------
    code, payload = alice.raw("$im/req/send", b"\xff\xff\xff")
    st = pb.Ack()
    st.ParseFromString(payload)
    check("malformed protobuf -> PUBACK 0x99, status 400",
          code == 0x99 and st.status.code == 400, (code, st))
    r, code = alice.send_text("nobody-here", "x")
    check("unknown recipient -> 404, PUBACK 0x83", r.status.code == 404 and code == 0x83,
          (code, r.status))
    r, code = alice.send_text("bob", "x", cmid="c" * 65)
    check("client_msg_id of 65 bytes -> 400", r.status.code == 400 and code == 0x99, r.status)
    # A throwaway device: if the PUBACK carried a code MQTT 5 does not allow there, paho
    # (strictly) would drop the connection.
    big = dev("alice-big", A["token"], username="alice")
    req = pb.SendRequest(to="bob", client_msg_id=uuid.uuid4().hex,
                         content=pb.Content(text=pb.Text(text="x" * (64 * 1024 + 1))))
    payload, code, dropped = big.answer_then_ack_or_drop("$im/req/send",
                                                         req.SerializeToString())
    big.close()
    r = pb.SendResponse()
    r.ParseFromString(payload)
    check("content over 64 KiB -> status 413", r.status.code == 413, r.status)
    check("413's PUBACK reason code is a valid PUBACK code (0x97)",
          code == 0x97 and not dropped, f"PUBACK {code}, connection dropped: {dropped}")
    r, code = alice.send_text("bob", "x", mentions=["bob"] * 101)
    check("101 mentions -> 400", r.status.code == 400, r.status)
    r, code = alice.send_text("bob", "")
    check("empty text -> 400", r.status.code == 400, r.status)
    r, code = alice.send_text("alice", "me")
    check("send to yourself -> 400", r.status.code == 400, r.status)
    r, code = alice.send_text("team", "x", conv_type=pb.CONV_TYPE_GROUP)
    check("send to a group that does not exist -> 404", r.status.code == 404, r.status)
    ans, code = alice.request("nope", pb.Ack(), pb.Ack)
    check("unknown op -> 404", ans.status.code == 404 and code == 0x83, (code, ans))
    for rt in ("$im/inbox", "$im/resp/"):
        code, payload = alice.raw("$im/req/typing", pb.TypingRequest(conversation=conv)
                                  .SerializeToString(), response_topic=rt, answered=False)
        check(f"response topic {rt!r}: the request runs (PUBACK 0x00), no answer",
              code == 0 and payload is None, (code, payload))
    code, payload = alice.raw("$im/req/typing", pb.TypingRequest(conversation=conv)
                              .SerializeToString(), qos=0)
    check("QoS 0 request: answered, no PUBACK", code is None and payload is not None,
          payload)

    # ---- 10. push jobs --------------------------------------------------------------
    svc = dev("push-worker-1", s["service_secret"], username="$service", subscribe=False)
    check("service login", svc.rc == 0, svc.rc)
    svc.c.subscribe([("$share/push/$im/push/#", mqtt.SubscribeOptions(qos=1))])
    check("push worker subscribes $share/push/$im/push/#",
          svc.subacks.get(timeout=WAIT) == [1])
    jobs = queue.Queue()
    svc.c.on_message = lambda c, u, m: jobs.put(m)
    r, _ = alice.send_text("carol", "are you there?")
    try:
        jm = jobs.get(timeout=WAIT)
        job = pb.PushJob()
        job.ParseFromString(jm.payload)
    except queue.Empty:
        jm, job = None, None
    carol_conv = f"p:{min(A['uid'], C['uid'])}:{max(A['uid'], C['uid'])}"
    check("offline recipient: push job on $im/push/{tenant}",
          job is not None and jm.topic == f"$im/push/{s['tenant']}" and job.user == "carol"
          and job.title == "alice" and job.body == "are you there?" and job.badge == 1
          and job.conversation == carol_conv and job.seq == 1
          and job.job_id == f"{s['tenant']}:{carol_conv}:1:{C['uid']}"
          and job.collapse_key == carol_conv and getattr(job, "from") == "alice", job)
    r, _ = alice.send_text("bob", "bob is online")
    try:
        extra = jobs.get(timeout=QUIET)
    except queue.Empty:
        extra = None
    check("online recipient: no push job", extra is None, extra)

    # ---- idempotency is per conversation; mentions -----------------------------------
    r, _ = alice.send_text("carol", "same id, other conversation", cmid=first_id)
    check("the same client_msg_id in another conversation is a new message",
          r.status.code == 0 and not r.duplicate and r.conversation == carol_conv
          and r.seq == 2, r)
    r, _ = alice.send_text("bob", "hey @bob", mentions=["bob"])
    convs, _ = bob.request("conversations", pb.ConversationsRequest(),
                           pb.ConversationsResponse)
    c = [c for c in convs.conversations if c.id == conv]
    check("a mention flags the conversation", c and c[0].mentioned, c)
    bob.request("read", pb.ReadRequest(conversation=conv, seq=r.seq), pb.Ack)
    convs, _ = bob.request("conversations", pb.ConversationsRequest(),
                           pb.ConversationsResponse)
    c = [c for c in convs.conversations if c.id == conv]
    check("reading past the mention clears it", c and not c[0].mentioned
          and c[0].unread == 0, c)

    # ---- 2.4 one phone at a time: kicked ------------------------------------------------
    F = s["frank"]
    fpc = dev("frank-pc", F["pc_token"], username="frank")
    f1 = dev("frank-phone-1", F["phone_tokens"][0], username="frank")
    check("frank's pc and first phone log in", fpc.rc == 0 and f1.rc == 0, (fpc.rc, f1.rc))
    f2 = dev("frank-phone-2", F["phone_tokens"][1], username="frank")
    check("second phone logs in", f2.rc == 0, f2.rc)
    k = fpc.event("kicked")
    check("the user's devices get kicked naming the older phone",
          k is not None and k.reason.endswith("(frank-phone-1)"), k)
    try:
        gone = f1.disconnects.get(timeout=WAIT)
    except queue.Empty:
        gone = None
    check("the older phone is disconnected with 0x98", gone == 0x98, gone)
    f1.close()
    r, _ = alice.send_text("frank", "still there?")
    m = f2.event("message")
    check("the new phone gets messages", m is not None and m.seq == r.seq, m)

    # ---- the cached badge after a reply ----------------------------------------------
    # bob has read everything; alice sends one, bob replies (his read position moves),
    # alice sends another: bob's real total is 1.
    one, _ = alice.send_text("bob", "one")
    bob.send_text("alice", "reply")
    two, _ = alice.send_text("bob", "two")
    u = bob.event("unread", lambda u: u.conversation == conv
                  and u.read_seq + u.unread == two.seq)
    convs, _ = bob.request("conversations", pb.ConversationsRequest(),
                           pb.ConversationsResponse)
    check("after a reply the conversation's unread is 1", u is not None and u.unread == 1, u)
    check("Unread.total after the user replied equals conversations' unread_total",
          u is not None and u.total == convs.unread_total,
          f"event total {u.total if u else None}, unread_total {convs.unread_total}")


if __name__ == "__main__":
    main()
