"""RongCloud's own Python server SDK (PyPI `rongcloud`) against Switchboard's gateway: the
SDK's API host is pointed at the gateway, nothing else changes. Effects are checked with an
MQTT device (paho + the IM protobuf classes, as in im_client.py).

Usage: rongcloud_sdk.py --http-port P --mqtt-port M --proto-dir DIR --app-key K --app-secret S
Prints `ok ...` per check and `N passed, M failed` at the end.
"""

import argparse
import json
import sys

import im_client
from im_client import Device, check, RESULTS

from rongcloud import RongCloud
from rongcloud.base import RongCloudBase


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--mqtt-port", type=int, required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--app-key", required=True)
    ap.add_argument("--app-secret", required=True)
    a = ap.parse_args()
    im_client.load_proto(a.proto_dir)
    pb = im_client.pb
    # The only change an app server makes: the API host.
    RongCloudBase.api_host = f"http://127.0.0.1:{a.http_port}"
    rc = RongCloud(a.app_key, a.app_secret)

    r = rc.User.getToken(userId="alice", name="Alice", portraitUri="http://x/a.png")
    check("getToken answers code 200 with the userId", r.status == 200 and r.result.get("code") == 200
          and r.result.get("userId") == "alice", r.result)
    r = rc.User.getToken(userId="bob", name="Bob", portraitUri="")
    token = r.result.get("token", "")
    check("getToken gives a token", bool(token), r.result)

    r = rc.User.checkOnline(userId="bob")
    check("checkOnline: bob offline -> status 0", r.result.get("status") == "0", r.result)
    bob = Device(a.mqtt_port, "bob-phone", token, username="bob")
    check("bob logs in with the SDK's token: CONNACK 0x00", bob.rc == 0, bob.rc)
    r = rc.User.checkOnline(userId="bob")
    check("checkOnline: bob online -> status 1",
          r.result.get("status") == "1", r.result)

    r = rc.Message.publishPrivate(fromUserId="alice", toUserId={"bob"}, objectName="RC:TxtMsg",
                                  content=json.dumps({"content": "hello from RongCloud's SDK",
                                                      "extra": ""}),
                                  pushContent="hi")
    check("publishPrivate answers code 200", r.result.get("code") == 200, r.result)
    m = bob.event("message")
    check("bob's device receives the text from alice",
          m is not None and m.content.text.text == "hello from RongCloud's SDK"
          and getattr(m, "from") == "alice", m)

    r = rc.Message.publishPrivate(fromUserId="alice", toUserId={"bob"}, objectName="App:Order",
                                  content=json.dumps({"order": 42}))
    m = bob.event("message")
    check("a custom object name arrives as a custom type with its JSON",
          m is not None and m.content.custom.type == "App:Order"
          and json.loads(m.content.custom.data) == {"order": 42}, m)

    # The SDK (2.0.1) spells this one with a capital P.
    r = rc.Message.PublishSystem(fromUserId="admin", toUserId={"bob"}, objectName="RC:TxtMsg",
                                 content=json.dumps({"content": "system notice"}))
    check("publishSystem answers code 200", r.result.get("code") == 200, r.result)
    m = bob.event("message")
    check("the system notice arrives in bob's system conversation",
          m is not None and m.conversation.startswith("s:") and m.content.text.text == "system notice", m)

    r = rc.Message.publishPrivate(fromUserId="alice", toUserId={"bob"}, objectName="RC:TxtMsg",
                                  content="not json")
    check("bad content -> HTTP 400, code 1002", r.status == 400 and r.result.get("code") == 1002, r.result)

    r = rc.User.block(userId="bob", minute="10")
    check("block answers code 200", r.result.get("code") == 200, r.result)
    k = bob.event("kicked")
    check("the blocked user's device is signed out", k is not None, k)
    r = rc.User.unBlock(userId="bob")
    check("unblock answers code 200", r.result.get("code") == 200, r.result)

    bad = RongCloud(a.app_key, "wrong-secret")
    r = bad.User.getToken(userId="mallory", name="M", portraitUri="")
    check("a wrong secret -> HTTP 401, code 1004", r.status == 401 and r.result.get("code") == 1004, r.result)

    bob.close()
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
