"""An independent SCRAM-SHA-256 peer (RFC 5802 / RFC 7677) written with Python's standard
library only, for interoperability tests of broker/src/auth/scram.rs.

Usage: scram_peer.py client USER PASSWORD
         prints client-first; reads server-first; prints client-final; reads server-final;
         prints "verified" if the server's signature is right, else "refused: ...".
       scram_peer.py server USER PASSWORD
         reads client-first; prints server-first; reads client-final; prints server-final
         (v=...) if the proof is right, else "e=invalid-proof".
One message per line on stdin/stdout.
"""

import base64
import hashlib
import hmac
import os
import sys


def h(data):
    return hashlib.sha256(data).digest()


def mac(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = mac(salted, b"Client Key")
    return client_key, h(client_key), mac(salted, b"Server Key")


def fields(msg):
    return dict(f.split("=", 1) for f in msg.split(","))


def say(line):
    print(line, flush=True)


def client(user, password):
    nonce = base64.b64encode(os.urandom(18)).decode()
    bare = f"n={user},r={nonce}"
    say("n,," + bare)
    server_first = sys.stdin.readline().strip()
    f = fields(server_first)
    if not f["r"].startswith(nonce):
        say("refused: nonce")
        return
    client_key, stored_key, server_key = keys(password, base64.b64decode(f["s"]), int(f["i"]))
    without_proof = f"c=biws,r={f['r']}"
    auth = f"{bare},{server_first},{without_proof}".encode()
    proof = bytes(a ^ b for a, b in zip(client_key, mac(stored_key, auth)))
    say(f"{without_proof},p={base64.b64encode(proof).decode()}")
    server_final = sys.stdin.readline().strip()
    expected = "v=" + base64.b64encode(mac(server_key, auth)).decode()
    say("verified" if hmac.compare_digest(server_final, expected) else f"refused: {server_final}")


def server(user, password):
    salt = os.urandom(16)
    iterations = 4096
    _, stored_key, server_key = keys(password, salt, iterations)
    client_first = sys.stdin.readline().strip()
    assert client_first.startswith("n,,"), client_first
    bare = client_first[3:]
    f = fields(bare)
    assert f["n"] == user, f
    nonce = f["r"] + base64.b64encode(os.urandom(18)).decode()
    server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
    say(server_first)
    client_final = sys.stdin.readline().strip()
    without_proof, proof = client_final.rsplit(",p=", 1)
    auth = f"{bare},{server_first},{without_proof}".encode()
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), mac(stored_key, auth)))
    if fields(without_proof)["r"] != nonce or not hmac.compare_digest(h(client_key), stored_key):
        say("e=invalid-proof")
        return
    say("v=" + base64.b64encode(mac(server_key, auth)).decode())


if __name__ == "__main__":
    mode, user, password = sys.argv[1:4]
    {"client": client, "server": server}[mode](user, password)
