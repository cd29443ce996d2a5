"""paho-mqtt (Python), an independent MQTT 5 client, against a Switchboard broker started
by tests/tests/paho_conformance.rs with broker.limits.max_keep_alive = 5 and
max_packet_size = 1024:

- server keep-alive override: a client asking for 60 s gets Server Keep Alive 5 in CONNACK;
- lingering close: a client that sends a packet over the maximum size and keeps
  publishing reads DISCONNECT 0x95 Packet too large (not a connection reset);
- a failed CONNACK (bad password on the locked broker) is read as 0x86 while the client
  keeps sending.

Usage: paho_conformance.py --port PORT --auth-port PORT
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""

import argparse
import queue
import socket
import struct
import sys
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10.0


def client(port_unused=None):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"paho-conf-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    return c


def server_keep_alive(port):
    connacks = queue.Queue()
    c = client()
    c.on_connect = lambda c, u, f, rc, p: connacks.put((rc, p))
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    try:
        rc, props = connacks.get(timeout=WAIT)
        assert rc == 0, f"CONNACK {rc}"
        return getattr(props, "ServerKeepAlive", None)
    finally:
        c.disconnect()
        c.loop_stop()


def too_large_then_keep_sending(port):
    """Returns the reason code paho reports in on_disconnect."""
    connacks = queue.Queue()
    gone = queue.Queue()
    c = client()
    c.on_connect = lambda c, u, f, rc, p: connacks.put(rc)
    c.on_disconnect = lambda c, u, f, rc, p: gone.put(rc)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    try:
        rc = connacks.get(timeout=WAIT)
        assert rc == 0, f"CONNACK {rc}"
        c.publish("conf/big", b"x" * 4096, qos=0)
        # Keep sending while the broker has already refused the connection.
        for i in range(200):
            c.publish("conf/small", b"y" * 100, qos=0)
        rc = gone.get(timeout=WAIT)
        return int(getattr(rc, "value", rc))
    finally:
        c.loop_stop()


def raw_failed_connack_while_sending(port):
    """A raw MQTT 5 client (so it can keep writing after CONNECT) with a wrong password
    that sends PINGREQs right after CONNECT: it must read CONNACK 0x86, not a reset."""
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    user, pw, cid = b"paho", b"wrong", b"conf-raw"
    var = b"\x00\x04MQTT\x05" + bytes([0x80 | 0x40 | 0x02]) + struct.pack(">H", 30) + b"\x00"
    payload = struct.pack(">H", len(cid)) + cid + struct.pack(">H", len(user)) + user
    payload += struct.pack(">H", len(pw)) + pw
    body = var + payload
    s.sendall(bytes([0x10, len(body)]) + body)
    try:
        for _ in range(2000):
            s.sendall(b"\xc0\x00")
    except OSError:
        pass
    data = b""
    try:
        while len(data) < 4:
            chunk = s.recv(64)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        return "reset"
    finally:
        s.close()
    if len(data) >= 4 and data[0] == 0x20:
        return data[3]
    return f"unexpected {data!r}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--auth-port", type=int, required=True)
    args = ap.parse_args()
    passed = failed = 0

    def check(name, fn, want):
        nonlocal passed, failed
        try:
            got = fn()
        except Exception as e:  # noqa: BLE001 - report and go on
            got = f"error: {e!r}"
        if got == want:
            passed += 1
            print(f"ok   {name}: {got}")
        else:
            failed += 1
            print(f"FAIL {name}: got {got}, want {want}")

    check("server keep alive override", lambda: server_keep_alive(args.port), 5)
    check("lingering close after 0x95", lambda: too_large_then_keep_sending(args.port), 0x95)
    check(
        "failed CONNACK read while the client keeps sending",
        lambda: raw_failed_connack_while_sending(args.auth_port),
        0x86,
    )
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
