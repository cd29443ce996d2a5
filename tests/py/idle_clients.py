"""Idle MQTT 3.1.1 clients over TLS or WebSocket, held open in this process so that the
test process measuring the broker's heap (tests/tests/idle_memory.rs) allocates nothing per
connection. Standard library only.

Usage: idle_clients.py tls|ws PORT [CAFILE]. Commands on stdin, one a line:
  open N   opens N more connections (CONNECT -> CONNACK, PINGREQ -> PINGRESP); prints "ok N"
  ping     PINGREQ -> PINGRESP on every connection; prints "alive N"
  quit     closes them all and exits
Any failure prints "error ..." and exits 1.
"""

import os
import socket
import ssl
import sys

PINGREQ = b"\xc0\x00"


def connect_packet(client_id):
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c"  # 3.1.1, clean session, keep-alive 60 s
    payload = len(cid).to_bytes(2, "big") + cid
    body = var + payload
    return b"\x10" + bytes([len(body)]) + body


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError("closed")
        out += chunk
    return out


class Tls:
    def __init__(self, port, cafile):
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.port = port

    def open(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        return self.ctx.wrap_socket(raw, server_hostname="localhost")

    def send(self, s, data):
        s.sendall(data)

    def recv(self, s, n):
        return recv_exact(s, n)


class Ws:
    def __init__(self, port):
        self.port = port

    def open(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        s.sendall(
            (
                "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += recv_exact(s, 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise OSError("upgrade refused: " + head.decode(errors="replace"))
        return s

    def send(self, s, data):
        # One masked binary frame (client frames are masked, RFC 6455 5.3).
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        s.sendall(b"\x82" + bytes([0x80 | len(data)]) + mask + masked)

    def recv(self, s, n):
        out = b""
        while len(out) < n:
            head = recv_exact(s, 2)
            length = head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(recv_exact(s, 2), "big")
            out += recv_exact(s, length)
        return out


def main():
    kind, port = sys.argv[1], int(sys.argv[2])
    t = Tls(port, sys.argv[3]) if kind == "tls" else Ws(port)
    held = []

    def ping(s):
        t.send(s, PINGREQ)
        if t.recv(s, 2) != b"\xd0\x00":
            raise OSError("no PINGRESP")

    for line in sys.stdin:
        cmd = line.split()
        try:
            if cmd[0] == "open":
                for _ in range(int(cmd[1])):
                    s = t.open()
                    t.send(s, connect_packet(f"idle-{kind}-{len(held)}"))
                    ack = t.recv(s, 4)
                    if ack != b"\x20\x02\x00\x00":
                        raise OSError(f"CONNACK {ack!r}")
                    ping(s)
                    held.append(s)
                print(f"ok {len(held)}", flush=True)
            elif cmd[0] == "ping":
                for s in held:
                    ping(s)
                print(f"alive {len(held)}", flush=True)
            else:
                break
        except OSError as e:
            print(f"error {e}", flush=True)
            sys.exit(1)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
