"""paho-mqtt (Python) against a running Switchboard broker, over MQTT 3.1.1 and 5.0.

Usage: paho_suite.py --port PORT [--auth-port PORT --user U --password P]
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""

import argparse
import queue
import socket
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10.0
ARGS = None


class Client:
    """A paho client with its events funnelled into queues."""

    def __init__(self, client_id, protocol, clean=True, will=None, port=None, user=None,
                 password=None, session_expiry=None, keepalive=30):
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.disconnects = queue.Queue()
        self.subacks = queue.Queue()
        self.acks = queue.Queue()
        kwargs = {"client_id": client_id, "protocol": protocol}
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        self.c.on_connect = lambda c, u, f, rc, p: self.connacks.put((rc, f))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.put((mid, rc))
        if user is not None:
            self.c.username_pw_set(user, password)
        if will is not None:
            self.c.will_set(*will)
        props = None
        if protocol == mqtt.MQTTv5 and session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        connect_kwargs = {"keepalive": keepalive, "properties": props}
        if protocol == mqtt.MQTTv5:
            connect_kwargs["clean_start"] = clean
        self.c.connect("127.0.0.1", port or ARGS.port, **connect_kwargs)
        self.c.loop_start()
        self.rc, self.flags = self.connacks.get(timeout=WAIT)

    def subscribe(self, topic, qos=1, **opts):
        if opts:
            self.c.subscribe(topic, options=mqtt.SubscribeOptions(qos=qos, **opts))
        else:
            self.c.subscribe(topic, qos)
        return self.subacks.get(timeout=WAIT)

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), "publish not acknowledged"

    def next(self, timeout=WAIT):
        return self.messages.get(timeout=timeout)

    def quiet(self, seconds):
        try:
            m = self.messages.get(timeout=seconds)
            return m is None
        except queue.Empty:
            return True

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()

    def crash(self):
        """Drops the TCP connection without DISCONNECT."""
        sock = self.c.socket()
        self.c.loop_stop()
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def uid(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def check_qos_levels_in_order(proto):
    t = uid("paho/order")
    sub = Client(uid("sub"), proto)
    sub.subscribe(t, 2)
    pub = Client(uid("pub"), proto)
    for i in range(30):
        pub.publish(t, f"m{i}", qos=i % 3)
    # paho hands a QoS 2 message to the application only at PUBREL, so compare the order
    # within each QoS level (the ordering MQTT promises, spec 4.6).
    got = {0: [], 1: [], 2: []}
    for _ in range(30):
        m = sub.next()
        got[m.qos].append(int(m.payload[1:]))
    for q in range(3):
        assert got[q] == list(range(q, 30, 3)), (q, got[q])
    sub.close()
    pub.close()


def check_retained_set_and_clear(proto):
    t = uid("paho/ret")
    pub = Client(uid("pub"), proto)
    pub.publish(t, "kept", retain=True)
    s1 = Client(uid("s1"), proto)
    s1.subscribe(t)
    m = s1.next()
    assert m.payload == b"kept" and m.retain
    pub.publish(t, "", retain=True)
    s2 = Client(uid("s2"), proto)
    s2.subscribe(t)
    assert s2.quiet(0.5), "cleared retained message was delivered"
    for c in (pub, s1, s2):
        c.close()


def check_will_on_abnormal_disconnect(proto):
    t = uid("paho/will")
    watcher = Client(uid("w"), proto)
    watcher.subscribe(t + "/#")
    polite = Client(uid("polite"), proto, will=(t + "/polite", "bye", 1))
    polite.close()
    dying = Client(uid("dying"), proto, will=(t + "/dying", "bye", 1))
    dying.crash()
    m = watcher.next()
    assert m.topic == t + "/dying", m.topic
    assert watcher.quiet(0.5)
    watcher.close()


def check_persistent_session(proto):
    t = uid("paho/persist")
    cid = uid("persist")
    kw = {"clean": False, "session_expiry": 300}
    s = Client(cid, proto, **kw)
    s.subscribe(t, 1)
    s.close()
    time.sleep(0.2)
    pub = Client(uid("pub"), proto)
    for i in range(5):
        pub.publish(t, f"q{i}", qos=1)
    s = Client(cid, proto, **kw)
    assert s.flags.session_present, "session not resumed"
    for i in range(5):
        assert s.next().payload == f"q{i}".encode()
    s.close()
    pub.close()


def check_bad_credentials(proto):
    if ARGS.auth_port is None:
        return
    bad = Client(uid("bad"), proto, port=ARGS.auth_port, user=ARGS.user, password="wrong")
    assert bad.rc != 0, "wrong password accepted"
    assert int(getattr(bad.rc, "value", bad.rc)) in (4, 134), bad.rc
    bad.c.loop_stop()
    good = Client(uid("good"), proto, port=ARGS.auth_port, user=ARGS.user, password=ARGS.password)
    assert good.rc == 0, good.rc
    good.close()


def check_takeover(proto):
    cid = uid("twin")
    first = Client(cid, proto)
    first.c.reconnect_delay_set(60, 120)  # don't fight back
    second = Client(cid, proto)
    rc = first.disconnects.get(timeout=WAIT)
    if proto == mqtt.MQTTv5:
        assert rc == 142, f"expected Session taken over (142), got {rc}"
    second.close()
    first.c.loop_stop()


def check_shared_subscription(proto):
    t = uid("paho/jobs")
    a = Client(uid("a"), proto)
    b = Client(uid("b"), proto)
    a.subscribe(f"$share/g/{t}")
    b.subscribe(f"$share/g/{t}")
    pub = Client(uid("pub"), proto)
    for i in range(10):
        pub.publish(t, f"j{i}")
    got = []
    deadline = time.time() + WAIT
    while len(got) < 10 and time.time() < deadline:
        for c in (a, b):
            try:
                got.append((c, c.next(timeout=0.1).payload))
            except queue.Empty:
                pass
    assert sorted(p for _, p in got) == sorted(f"j{i}".encode() for i in range(10)), got
    assert {c for c, _ in got} == {a, b}, "both members should get work"
    for c in (a, b, pub):
        c.close()


def check_request_response_and_expiry(proto):
    t = uid("paho/rr")
    responder = Client(uid("resp"), proto)
    responder.subscribe(t)
    req = Client(uid("req"), proto)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = t + "/reply"
    props.CorrelationData = b"c-1"
    props.MessageExpiryInterval = 100
    props.UserProperty = [("k", "v")]
    req.publish(t, "question", props=props)
    m = responder.next()
    assert m.properties.ResponseTopic == t + "/reply"
    assert m.properties.CorrelationData == b"c-1"
    assert 0 < m.properties.MessageExpiryInterval <= 100
    assert ("k", "v") in m.properties.UserProperty
    responder.close()
    req.close()


def check_topic_alias(proto):
    t = uid("paho/alias")
    sub = Client(uid("sub"), proto)
    sub.subscribe(t)
    pub = Client(uid("pub"), proto)
    p1 = Properties(PacketTypes.PUBLISH)
    p1.TopicAlias = 1
    pub.publish(t, "first", props=p1)
    p2 = Properties(PacketTypes.PUBLISH)
    p2.TopicAlias = 1
    pub.publish("", "second", props=p2)
    assert sub.next().topic == t
    m = sub.next()
    assert m.topic == t and m.payload == b"second", (m.topic, m.payload)
    sub.close()
    pub.close()


def check_malformed_packet_gets_reason_code(proto):
    s = socket.create_connection(("127.0.0.1", ARGS.port), timeout=WAIT)
    cid = uid("raw").encode()
    if proto == mqtt.MQTTv5:
        body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + len(cid).to_bytes(2, "big") + cid
    else:
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    s.sendall(bytes([0x10, len(body)]) + body)
    # Read exactly the CONNACK (its properties may be long): header, remaining length, body.
    data = b""
    while len(data) < 2 or (data[1] & 0x80 and len(data) < 3):
        chunk = s.recv(1)
        assert chunk, data
        data += chunk
    assert data[0] == 0x20, data
    size, shift, i = 0, 0, 1
    while True:
        size |= (data[i] & 0x7F) << shift
        if not data[i] & 0x80:
            break
        shift, i = shift + 7, i + 1
        while len(data) <= i:
            data += s.recv(1)
    data = data[i + 1:]
    while len(data) < size:
        chunk = s.recv(size - len(data))
        assert chunk, data
        data += chunk
    s.sendall(b"\x36\x05\x00\x01a\x00\x01")  # PUBLISH with QoS 3
    data = b""
    while True:
        chunk = s.recv(64)
        if not chunk:
            break
        data += chunk
    if proto == mqtt.MQTTv5:
        assert data[:1] == b"\xe0" and data[2] == 0x81, data
    s.close()
    # The broker still serves others.
    c = Client(uid("after"), proto)
    assert c.rc == 0
    c.close()


CHECKS = [
    (check_qos_levels_in_order, "both"),
    (check_retained_set_and_clear, "both"),
    (check_will_on_abnormal_disconnect, "both"),
    (check_persistent_session, "both"),
    (check_bad_credentials, "both"),
    (check_takeover, "both"),
    (check_shared_subscription, "both"),
    (check_malformed_packet_gets_reason_code, "both"),
    (check_request_response_and_expiry, "v5"),
    (check_topic_alias, "v5"),
]


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--auth-port", type=int)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ARGS = ap.parse_args()
    passed = failed = 0
    for check, versions in CHECKS:
        protos = [mqtt.MQTTv5] if versions == "v5" else [mqtt.MQTTv311, mqtt.MQTTv5]
        for proto in protos:
            name = f"{check.__name__}[{'v5' if proto == mqtt.MQTTv5 else 'v311'}]"
            try:
                check(proto)
                passed += 1
                print(f"ok   {name}", flush=True)
            except Exception as e:  # report and go on with the next check
                failed += 1
                print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
    print(f"paho: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
