#!/usr/bin/python3
"""Flow sync datagrams as a hostile host on the gateways' LAN sends them: recorded ones
replayed, altered, or forged from scratch, each from a spoofed gateway's sync address.

    sync_forge.py --iface eth0 --src-ip A --dst-ip B --dst-mac MAC [--rate N]
        [--duration S | --repeat N] [--list] SOURCE ...

SOURCE is one of:

    replay --pcap FILE [--from IP --to IP] [--kind K] [--flip OFFSET ...]
        The sync datagrams FILE (a tcpdump capture) holds from FROM to TO (default: from
        --src-ip to --dst-ip), as they were (--kind keeps one message kind: 1 batch,
        2 nack, 3 heartbeat, 4 resync request). With --flip, instead of each datagram one
        copy per OFFSET with the byte there XORed with 1 (a negative OFFSET counts from the
        end: -1 is the last byte of the tag).

    forge --format {v1,plain,sealed} [--key FILE] --message M [--count N] [--sniff FILE]
          [--epoch {sniffed,new}] [--echo {sniffed,zero}] [--expect REASON]
          [message options]
        Datagrams made from scratch. v1: the unauthenticated format of version 1; plain:
        version 2 with no seal (suite 0); sealed: version 2 sealed with AES-256-GCM under
        the epoch's key derived from FILE as the gateways derive theirs (HKDF-SHA256), so a
        key file of random bytes is a wrong key, and the gateways' own file is the right one
        (the lab's control that the sealing here is the gateways'). With --sniff, the header
        carries what an eavesdropper reads in clear from the capture's latest datagram from
        --src-ip to --dst-ip: the sender's epoch, its token, the receiver's token it
        echoes, and counters above every one sent; --epoch new takes a random epoch instead
        (a forged restart), --echo zero echoes no token. --expect names the reason the
        receiver counts them under when the format does not tell (sealed with the right
        key: unconfirmed with --echo zero).
        Messages (each datagram a batch of records unless said otherwise):
          portforward   per datagram: a node record binding --node to --node-mac (when
                        given), then an upsert of each --flow (a "port forward": the
                        outside's packets to the floating IP and NAT port go to the pod)
          flood         --count batches of distinct UDP upserts, as many as fit, toward
                        --remote (a full table of flows)
          ports         upserts of every NAT port of --port-range toward the first --flow's
                        remote address and port (no port left for that destination)
          sweep         empty full resyncs (a batch flagged as the first and the last of
                        a resync, without records): "I hold no flow"
          resync        ResyncRequests (stream 0: any)
          heartbeat     heartbeats claiming priority 254 for VRID 10, naming the sender
                        --name (default: none; the gateways report a peer by the name
                        its heartbeats carry)
        Upserts announce the longest time left there is (2^32 - 1 s) unless --remaining.
        Options: --flow PROTO:POD:POD_PORT:REMOTE:REMOTE_PORT:NAT_PORT (tcp or udp;
        repeatable), --node IP, --egress IP (the floating IP), --node-mac MAC,
        --remote IP:PORT, --port-range A-B, --remaining SECONDS, --name NAME.

Every datagram leaves as a whole Ethernet frame through a packet socket bound to IFACE,
from IFACE's MAC to --dst-mac, UDP from --src-ip:4801 to --dst-ip:4801: no route or address
is needed to spoof. The datagrams go out in order, --rate a second (0: at once), once, or
--repeat times, or round after round until --duration seconds have passed.

Prints "ready" just before the first datagram leaves; "expect REASON N ..." first: how the
receiver must count them, from what their clear headers say (replay: a datagram that echoes
the receiver's current token; unconfirmed: one that echoes another; auth: altered, unsealed
or sealed under another key; version: version 1; length: version 1 shorter than a version 2
header); and at the end "sent N last T", T the
wall-clock time (Unix seconds) the last one left. --list prints the payloads in hex instead.
Run by the hostile-sync lab in the stranger's namespace. Needs python3-cryptography.
"""

import argparse
import os
import socket
import struct
import sys
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from inet import checksum

SYNC_PORT = 4801
MAGIC = b"EGSY"
HEADER_LEN = 48
V1_MAX_CHANGES = 43
V2_MAX_CHANGES = 41
TAG_LEN = 16
INFO = b"egret flow sync v2 aes-256-gcm epoch "
FOREVER = 0xFFFFFFFF
KIND_BATCH, KIND_NACK, KIND_HEARTBEAT, KIND_RESYNC = 1, 2, 3, 4
OP_UPSERT, OP_NODE = 1, 3
PROTO = {"tcp": 6, "udp": 17}
# Open for UDP; established for TCP.
STATE = {6: 3, 17: 0}

M32 = 0xFFFFFFFF


def derive(secret):
    """The key secret for the HKDF expansion: what the gateways keep of the file."""
    return secret


def epoch_key(secret, epoch):
    """The key of a sender's boot, as the gateways derive it: HKDF-SHA256 of the file's
    bytes, expanded with the epoch as context."""
    info = INFO + epoch.to_bytes(8, "big")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def seal(secret, datagram):
    """AES-256-GCM under the sender's epoch key: the header authenticated, the body
    encrypted, the tag appended; the nonce is the header's counter, then zeros."""
    header, body = datagram[:HEADER_LEN], datagram[HEADER_LEN:]
    epoch = int.from_bytes(datagram[8:16], "big")
    nonce = datagram[16:24] + bytes(4)
    return header + AESGCM(epoch_key(secret, epoch)).encrypt(nonce, body, header)


def self_test():
    # RFC 5869 A.1: HKDF-SHA256 as the gateways use it (extract, then expand).
    ikm = bytes([0x0B] * 22)
    okm = HKDF(algorithm=hashes.SHA256(), length=42, salt=bytes(range(13)),
               info=bytes(range(0xF0, 0xFA))).derive(ikm)
    assert okm.hex().startswith("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56")


def ipv4(text):
    return socket.inet_aton(text)


def mac(text):
    return bytes.fromhex(text.replace(":", ""))


def upsert(proto, node, egress, pod, pod_port, remote, remote_port, nat_port, remaining):
    return struct.pack(
        "!BBBx4s4s4s4sHHHxxI", OP_UPSERT, proto, STATE[proto], node, egress, pod, remote,
        pod_port, remote_port, nat_port, remaining)


def node_record(node, node_mac, tunnel_mac):
    return struct.pack("!BBxx4s6s6s12x", OP_NODE, 17, node, node_mac, tunnel_mac)


class Header:
    """What the clear header of a forged datagram carries."""

    def __init__(self, epoch, counter, token, echo, primary):
        self.epoch, self.counter, self.token, self.echo = epoch, counter, token, echo
        self.primary = primary

    def next(self):
        self.counter += 1
        return self.counter


def v2(kind, suite, h, body):
    counter = h.next()
    head = MAGIC + struct.pack("!BBBx", 2, kind, suite)
    head += struct.pack("!QQQQ4s4x", h.epoch, counter, h.token, h.echo, h.primary)
    return head + body


def v1(kind, epoch, body):
    return MAGIC + struct.pack("!BBxxQ", 1, kind, epoch) + body


# Batch flags: part of a full resync, its first batch, its last.
SWEEP = 0x07


def batch_body(seq, records, flags=0):
    return struct.pack("!IBBxx", seq & M32, flags, len(records)) + b"".join(records)


def pcap_udp(path):
    """(source, destination, payload) of every IPv4 UDP datagram on the sync port in a
    pcap file of Ethernet frames."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise SystemExit(f"{path}: not a pcap file")
    at = 24
    out = []
    while at + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + caplen]
        at += 16 + caplen
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack("!H", frame[16:18])[0]
        l4 = 14 + ihl
        sport, dport, ulen = struct.unpack("!HHH", frame[l4:l4 + 6])
        if SYNC_PORT not in (sport, dport) or len(frame) < 14 + total:
            continue
        out.append((socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]),
                    frame[l4 + 8:l4 + ulen]))
    return out


def fields(payload):
    """epoch, counter, token, echo of a v2 header."""
    return struct.unpack("!QQQQ", payload[8:40])


def sniff(path, src, dst):
    """The header an eavesdropper would forge from the capture: the latest datagram from
    src to dst gives the sender's epoch, its token and the receiver's token it echoes; the
    counter goes above every one src sent."""
    seen = [p for s, d, p in pcap_udp(path) if s == src and d == dst and len(p) >= HEADER_LEN]
    if not seen:
        raise SystemExit(f"{path}: no sync datagram from {src} to {dst}")
    epoch, _, token, echo = fields(seen[-1])
    counter = max(fields(p)[1] for s, d, p in pcap_udp(path) if s == src and len(p) >= HEADER_LEN)
    return epoch, counter, token, echo


def receiver_token(path, src, dst):
    """The receiver's (dst's) current token for src: the latest one dst sent to src."""
    sent = [p for s, d, p in pcap_udp(path) if s == dst and d == src and len(p) >= HEADER_LEN]
    return fields(sent[-1])[2] if sent else None


def replay(a):
    src, dst = a.from_ip or a.src_ip, a.to_ip or a.dst_ip
    recorded = [p for s, d, p in pcap_udp(a.pcap) if s == src and d == dst]
    if a.kind is not None:
        recorded = [p for p in recorded if len(p) > 5 and p[5] == a.kind]
    if not recorded:
        raise SystemExit(f"{a.pcap}: nothing recorded from {src} to {dst}")
    if a.flip:
        out = []
        for p in recorded:
            for offset in a.flip:
                q = bytearray(p)
                q[offset] ^= 1
                out.append(bytes(q))
        return out, {"auth": len(out)}
    # Sent to dst from src's address: fresh for dst only when it echoes dst's current token
    # for src (and then a replay, its counter seen), else not confirmed.
    token = receiver_token(a.pcap, a.src_ip, a.dst_ip)
    replays = sum(1 for p in recorded if token is not None and fields(p)[3] == token)
    return recorded, {"replay": replays, "unconfirmed": len(recorded) - replays}


def forge(a):
    if a.sniff:
        epoch, counter, token, echo = sniff(a.sniff, a.src_ip, a.dst_ip)
    else:
        epoch, counter, token, echo = (int.from_bytes(os.urandom(8), "big"), 0,
                                       int.from_bytes(os.urandom(8), "big"), 0)
    if a.epoch == "new":
        epoch = int.from_bytes(os.urandom(8), "big")
    if a.echo == "zero":
        echo = 0
    h = Header(epoch, counter, token, echo, ipv4(a.src_ip))
    key = derive(open(a.key, "rb").read()) if a.format == "sealed" else None
    per = V1_MAX_CHANGES if a.format == "v1" else V2_MAX_CHANGES
    node, egress = ipv4(a.node), ipv4(a.egress)
    remaining = a.remaining

    def flow_records(flows):
        out = []
        for proto, pod, pod_port, remote, remote_port, nat_port in flows:
            out.append(upsert(proto, node, egress, pod, pod_port, remote, remote_port,
                              nat_port, remaining))
        return out

    flows = []
    for text in a.flow:
        proto, pod, pod_port, remote, remote_port, nat_port = text.split(":")
        flows.append((PROTO[proto], ipv4(pod), int(pod_port), ipv4(remote), int(remote_port),
                      int(nat_port)))

    batches = []
    if a.message == "portforward":
        records = []
        if a.node_mac:
            records.append(node_record(node, mac(a.node_mac), mac(a.tunnel_mac or a.node_mac)))
        records += flow_records(flows)
        batches = [records[:per]] * a.count
    elif a.message == "flood":
        remote, first_port = a.remote.split(":")
        pod = ipv4("10.10.1.5")
        k = 0
        for _ in range(a.count):
            records = []
            for _ in range(per):
                records.append(upsert(17, node, egress, pod, 1 + k % 65535, ipv4(remote),
                                      int(first_port) + k // 65535, 40000 + k % 20001,
                                      remaining))
                k += 1
            batches.append(records)
    elif a.message == "sweep":
        batches = [[]] * a.count
    elif a.message == "ports":
        low, high = (int(x) for x in a.port_range.split("-"))
        proto, pod, _, remote, remote_port, _ = flows[0]
        ports = list(range(low, high + 1))
        for i in range(0, len(ports), per):
            batches.append(flow_records(
                [(proto, pod, p, remote, remote_port, p) for p in ports[i:i + per]]))
        batches = batches * a.count

    datagrams = []
    if a.message in ("resync", "heartbeat"):
        for _ in range(a.count):
            if a.message == "resync":
                kind, body = KIND_RESYNC, struct.pack("!Q", 0)
            else:
                # last_seq 0, one claim, the name's length, reserved; the claim; the name.
                name = a.name.encode()
                kind = KIND_HEARTBEAT
                body = struct.pack("!IBB2x", 0, 1, len(name)) + bytes([10, 254]) + name
            if a.format == "v1":
                datagrams.append(v1(kind, epoch, body[:8] if kind == KIND_RESYNC else body[:4]))
            else:
                datagrams.append(v2(kind, 1 if key else 0, h, body))
    else:
        flags = SWEEP if a.message == "sweep" else 0
        for seq, records in enumerate(batches, start=1):
            body = batch_body(seq, records, flags)
            if a.format == "v1":
                datagrams.append(v1(KIND_BATCH, epoch, body))
            else:
                datagrams.append(v2(KIND_BATCH, 1 if key else 0, h, body))
    if key:
        datagrams = [seal(key, d) for d in datagrams]
    expect = {}
    for d in datagrams:
        # A version 1 datagram shorter than a version 2 header is refused for its length
        # before its version is read.
        reason = a.expect or {"v1": "version" if len(d) >= HEADER_LEN else "length",
                              "plain": "auth", "sealed": "auth"}[a.format]
        expect[reason] = expect.get(reason, 0) + 1
    return datagrams, expect


def frame(src_mac, dst_mac, src, dst, payload, ident):
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", SYNC_PORT, SYNC_PORT, udp_len, 0) + payload
    sum_ = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", sum_) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0, 64, 17, 0,
                     src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + udp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iface", default="eth0")
    parser.add_argument("--src-ip", required=True, help="the spoofed gateway's address")
    parser.add_argument("--dst-ip", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--self-test", action="store_true")
    sub = parser.add_subparsers(dest="source")
    r = sub.add_parser("replay")
    r.add_argument("--pcap", required=True)
    r.add_argument("--from", dest="from_ip")
    r.add_argument("--to", dest="to_ip")
    r.add_argument("--kind", type=int)
    r.add_argument("--flip", type=int, action="append", default=[])
    f = sub.add_parser("forge")
    f.add_argument("--format", choices=["v1", "plain", "sealed"], required=True)
    f.add_argument("--key")
    f.add_argument("--message", required=True,
                   choices=["portforward", "flood", "ports", "sweep", "resync", "heartbeat"])
    f.add_argument("--count", type=int, default=1)
    f.add_argument("--sniff")
    f.add_argument("--epoch", choices=["sniffed", "new"], default="sniffed")
    f.add_argument("--echo", choices=["sniffed", "zero"], default="sniffed")
    f.add_argument("--expect")
    f.add_argument("--flow", action="append", default=[])
    f.add_argument("--node", default="192.168.50.21")
    f.add_argument("--egress", default="192.168.50.100")
    f.add_argument("--node-mac")
    f.add_argument("--tunnel-mac")
    f.add_argument("--remote", default="198.51.100.10:10000")
    f.add_argument("--port-range", default="40000-60000")
    f.add_argument("--remaining", type=int, default=FOREVER)
    f.add_argument("--name", default="")
    a = parser.parse_args()
    self_test()
    if a.self_test:
        print("ok")
        return 0
    if a.source == "replay":
        payloads, expect = replay(a)
    elif a.source == "forge":
        if a.format == "sealed" and not a.key:
            parser.error("--format sealed needs --key")
        payloads, expect = forge(a)
    else:
        parser.error("say replay or forge")
    if a.list:
        for p in payloads:
            print(p.hex())
        return 0
    with open(f"/sys/class/net/{a.iface}/address") as f:
        src_mac = mac(f.read().strip())
    src, dst, dst_mac = ipv4(a.src_ip), ipv4(a.dst_ip), mac(a.dst_mac)
    frames = [frame(src_mac, dst_mac, src, dst, p, i) for i, p in enumerate(payloads)]
    per_round = {reason: n for reason, n in expect.items() if n}
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((a.iface, 0))
    print("expect " + " ".join(f"{k} {v}" for k, v in sorted(per_round.items())) +
          f" per round of {len(frames)}", flush=True)
    print("ready", flush=True)
    start = time.monotonic()
    sent = 0
    rounds = 0
    while True:
        for data in frames:
            if a.rate > 0:
                delay = start + sent / a.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sock.send(data)
            sent += 1
        rounds += 1
        if a.duration is not None:
            if time.monotonic() - start >= a.duration:
                break
        elif rounds >= a.repeat:
            break
    last = time.time()
    print(f"sent {sent} rounds {rounds} last {last:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
