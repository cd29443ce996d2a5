#!/usr/bin/env python3
"""Heap of one idle QUIC connection in the broker, by owner.

Input: two heaptrack "leaked" stack files of tests/tests/idle_memory_quic.rs, one taken with
SB_QUIC_IDLE_EXIT_AT=base (the warm connections only) and one with SB_QUIC_IDLE_EXIT_AT=mqtt
(plus the measured ones, parked and aged), each demangled. The difference per call stack,
divided by the measured connections, is what one idle connection holds; each stack is given
to the owner named by its innermost recognised frame. Recipe (debug test binary):

    B=target/debug/deps/idle_memory_quic-<hash>
    for m in base mqtt; do
      SB_QUIC_IDLE_EXIT_AT=$m heaptrack -o $m $B \
        idle_quic_connection_heap_is_measured_and_bounded --exact --nocapture
      heaptrack_print -f $m.zst -p 0 -a 0 -T 0 --flamegraph-cost-type leaked -F $m.stacks
      rustfilt -i $m.stacks -o $m.dm
    done
    python3 bench/results/transports-quic-owners.py base.dm mqtt.dm 500
"""

import collections
import re
import sys

SUBST = [("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$u7b$", "{"), ("$u7d$", "}"),
         ("$C$", ","), ("..", "::"), ("$RF$", "&"), ("$LP$", "("), ("$RP$", ")")]


def norm(frame):
    frame = frame.rsplit(" (", 1)[0]
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    for a, b in SUBST:
        frame = frame.replace(a, b)
    return frame


def load(path):
    stacks = collections.Counter()
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            at = line.rfind(" ")
            stacks[line[:at]] += int(line[at + 1:])
    return stacks


def owner(stack):
    frames = [norm(f) for f in stack.split(";")]
    whole = ";".join(frames)
    for f in reversed(frames):
        if re.search(r"mpsc::block::Block|mpsc::chan::channel_from_list|mpsc::list::Tx", f):
            if "quinn::" in whole:
                return "quinn: event channel endpoint -> connection (tokio mpsc blocks)"
            return "ours: channels"
        if "next_1rtt_keys" in f or ("packet_key" in f and "next_packet_keys" in whole):
            return "keys: next 1-RTT packet keys (made in advance for a key update)"
        if "header_protection_key" in f:
            return "keys: 1-RTT header protection"
        if "quic::Algorithm>::packet_key" in f:
            return "keys: 1-RTT packet keys"
        if re.search(r"AeadAlgorithm::(en|de)crypter", f):
            return "keys: rustls record-layer encrypter/decrypter (unused by QUIC)"
        if "start_session" in f:
            return "rustls: QUIC session (Box<TlsSession>)"
        if f.startswith("rustls::") or f.startswith("<rustls"):
            return "rustls: handshake leftovers (deframer buffers, ticket, copies)"
        if "ConnectionRef::new" in f:
            return "quinn: ConnectionRef (quinn-proto Connection inline + driver state)"
        if "create_io_poller" in f or "new_timer" in f or "Connecting::new" in f:
            return "quinn: driver's UDP poller, timer, handshake oneshots"
        if "drive_transmit" in f:
            return "quinn: send buffer (one datagram)"
        if "PacketSpace::sent" in f:
            return "quinn-proto: sent-packet map (BTreeMap leaf)"
        if re.search(r"streams::|RecvStream::|SendStream::|send_buffer::|range_set", f):
            return "quinn-proto: the MQTT stream's state"
        if re.search(r"read_crypto|write_crypto", f) or (
                "assembler" in f and re.search(r"read_crypto|write_crypto", whole)):
            return "quinn-proto: crypto-stream leftovers"
        if re.search(r"quinn_proto::endpoint::|quinn::endpoint::", f):
            return "quinn-proto: endpoint CID tables, connection slab, senders map"
        if f.startswith("quinn_proto::") or f.startswith("<quinn_proto"):
            return "quinn-proto: CIDs, congestion controller, other"
        if "TaskTracker::spawn" in f:
            return "ours: the QUIC connection's task future"
        if "switchboard" in f:
            return "ours: MQTT session (mailbox, registry)"
        if re.search(r"RawTask::new|Cell<T,S>::new", f):
            return "tokio: task cells (quinn's driver, our task)"
    if "switchboard" in stack or "(quic.rs)" in stack or "(liveness.rs)" in stack:
        return "ours: the MQTT connection's boxed futures and Live box"
    return "other"


def main():
    base, measured, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
    by_owner = collections.Counter()
    for stack in set(base) | set(measured):
        d = measured[stack] - base[stack]
        if d:
            by_owner[owner(stack)] += d
    for name, b in sorted(by_owner.items(), key=lambda x: -x[1]):
        print(f"| {name} | {b / n:,.0f} |")
    print(f"| total | {sum(by_owner.values()) / n:,.0f} |")


if __name__ == "__main__":
    main()
