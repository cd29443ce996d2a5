"""Schemathesis hooks for the gateway's native API: every generated request is signed the
way an app server signs it (docs/gateway.md), over the exact bytes `requests` sends, so the
fuzzing reaches the handlers instead of stopping at 401. The app key and secret come from
SB_APP_KEY / SB_APP_SECRET."""

import hashlib
import hmac
import os
import time
import uuid

import requests
import schemathesis


class Signed(requests.auth.AuthBase):
    """Adds App-Key, Nonce, Timestamp and Signature to a prepared request."""

    def __call__(self, r):
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        nonce = uuid.uuid4().hex
        ts = str(int(time.time()))
        secret = os.environ["SB_APP_SECRET"].encode()
        sig = hmac.new(secret, nonce.encode() + ts.encode() + body, hashlib.sha256).hexdigest()
        r.headers.update({"App-Key": os.environ["SB_APP_KEY"], "Nonce": nonce,
                          "Timestamp": ts, "Signature": sig})
        return r


@schemathesis.hook
def before_call(context, case, kwargs):
    kwargs["auth"] = Signed()
