"""paho-mqtt over TLS, WebSocket and WebSocket over TLS against Switchboard.

Usage: paho_transports.py --ca CA.pem --tls PORT --ws PORT --wss PORT
"""

import argparse
import queue
import ssl
import sys
import uuid

import paho.mqtt.client as mqtt

WAIT = 10.0


def roundtrip(port, transport, ca, protocol):
    got = queue.Queue()
    ready = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{uuid.uuid4().hex[:8]}",
                    protocol=protocol, transport=transport)
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    if ca:
        c.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
    c.on_connect = lambda cl, u, f, rc, p: ready.put(rc)
    c.on_subscribe = lambda cl, u, mid, rcs, p: ready.put("sub")
    c.on_message = lambda cl, u, m: got.put(m)
    c.connect("localhost", port)
    c.loop_start()
    rc = ready.get(timeout=WAIT)
    assert rc == 0, rc
    topic = f"paho/{transport}/{uuid.uuid4().hex[:6]}"
    c.subscribe(topic, 1)
    assert ready.get(timeout=WAIT) == "sub"
    c.publish(topic, b"over the wire", qos=1)
    m = got.get(timeout=WAIT)
    assert m.payload == b"over the wire", m.payload
    c.disconnect()
    c.loop_stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ca", required=True)
    ap.add_argument("--tls", type=int, required=True)
    ap.add_argument("--ws", type=int, required=True)
    ap.add_argument("--wss", type=int, required=True)
    a = ap.parse_args()
    cases = [
        ("tls", a.tls, "tcp", a.ca),
        ("ws", a.ws, "websockets", None),
        ("wss", a.wss, "websockets", a.ca),
    ]
    passed = failed = 0
    for name, port, transport, ca in cases:
        for proto, pname in ((mqtt.MQTTv311, "v311"), (mqtt.MQTTv5, "v5")):
            try:
                roundtrip(port, transport, ca, proto)
                passed += 1
                print(f"ok   {name}[{pname}]", flush=True)
            except Exception as e:
                failed += 1
                print(f"FAIL {name}[{pname}]: {type(e).__name__}: {e}", flush=True)
    print(f"paho transports: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
