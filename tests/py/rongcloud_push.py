"""RongCloud's own Python server SDK (PyPI `rongcloud`) sends /push.json notifications
aimed at one platform; the Rust side (tests/tests/rongcloud_push.rs) checks what the mock
APNs and FCM servers receive.

Usage: rongcloud_push.py --http-port P --app-key K --app-secret S
Prints `ok ...` per check and `N passed, M failed` at the end.
"""

import argparse
import sys

from rongcloud import RongCloud
from rongcloud.base import RongCloudBase

RESULTS = {"passed": 0, "failed": 0}


def check(name, cond, detail=""):
    RESULTS["passed" if cond else "failed"] += 1
    print(f"{'ok  ' if cond else 'FAIL'} {name} {'' if cond else detail}")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--app-key", required=True)
    ap.add_argument("--app-secret", required=True)
    a = ap.parse_args()
    RongCloudBase.api_host = f"http://127.0.0.1:{a.http_port}"
    rc = RongCloud(a.app_key, a.app_secret)
    note = {"alert": "common", "ios": {"title": "To iPhones", "alert": "for iphone"},
            "android": {"alert": "for android"}}
    audience = {"userid": ["bob", "carol"], "is_to_all": False}
    r = rc.Push.broadcastPush(pushMessage={"platform": ["ios"], "audience": audience,
                                           "notification": note})
    check("an iOS-only push answers code 200 with an id",
          r.result.get("code") == 200 and r.result.get("id"), r.result)
    r = rc.Push.broadcastPush(pushMessage={"platform": ["android"], "audience": audience,
                                           "notification": note})
    check("an Android-only push answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Push.broadcastPush(pushMessage={"platform": ["web"], "audience": audience,
                                           "notification": note})
    check("an unknown platform -> 1002", r.result.get("code") == 1002, r.result)
    r = rc.Push.broadcastPush(pushMessage={"audience": audience, "notification": note})
    check("no platform -> 1002", r.result.get("code") == 1002, r.result)
    r = rc.Push.broadcastPush(pushMessage={"platform": ["ios", "android"],
                                           "audience": {"userid": ["bob"]},
                                           "notification": {"alert": "both"}})
    check("a push to both platforms answers code 200", r.result.get("code") == 200, r.result)
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
