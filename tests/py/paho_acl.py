"""paho-mqtt (Python) against a Switchboard broker running tests/tests/acl.rs's ACL file:
a SUBSCRIBE the ACL refuses gets reason code 0x87 Not authorized in MQTT 5 (0x80 in 3.1.1),
and an allowed one is granted.

Usage: paho_acl.py --port PORT
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""

import argparse
import queue
import sys
import uuid

import paho.mqtt.client as mqtt

WAIT = 10.0


def suback_codes(port, protocol, user, topics):
    """Connects as `user`, subscribes to each topic, returns the SUBACK reason codes."""
    acks = queue.Queue()
    connacks = queue.Queue()
    kwargs = {"client_id": f"paho-acl-{uuid.uuid4().hex[:8]}", "protocol": protocol}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
    c.on_connect = lambda c, u, f, rc, p: connacks.put(rc)
    c.on_subscribe = lambda c, u, mid, rcs, p: acks.put(rcs)
    c.username_pw_set(user, "")
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    try:
        rc = connacks.get(timeout=WAIT)
        assert rc == 0, f"CONNACK {rc}"
        codes = []
        for t in topics:
            c.subscribe(t, qos=1)
            rcs = acks.get(timeout=WAIT)
            codes.append(int(getattr(rcs[0], "value", rcs[0])))
        return codes
    finally:
        c.disconnect()
        c.loop_stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    passed = failed = 0

    def check(name, got, want):
        nonlocal passed, failed
        if got == want:
            passed += 1
            print(f"ok   {name}: {got}")
        else:
            failed += 1
            print(f"FAIL {name}: got {got}, want {want}")

    try:
        codes = suback_codes(args.port, mqtt.MQTTv5, "alice", ["public/#", "alice/inbox/+"])
        check("v5 SUBACK refused by ACL", codes[0], 0x87)
        check("v5 SUBACK granted by ACL", codes[1], 1)
        codes = suback_codes(args.port, mqtt.MQTTv311, "alice", ["public/#", "alice/inbox/+"])
        check("3.1.1 SUBACK refused by ACL", codes[0], 0x80)
        check("3.1.1 SUBACK granted by ACL", codes[1], 1)
    except Exception as e:  # a timeout or refused connection is a failure, not a crash
        failed += 1
        print(f"FAIL exception: {e!r}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
