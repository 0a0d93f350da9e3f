#!/usr/bin/python3
"""Sends a burst of malformed frames at the gateway, from the namespace it runs in, out of
IFACE: every frame is addressed to the gateway's MAC and the floating IP, the way a node's
tunnel traffic is, and each is broken in one way (outer headers, the VXLAN header, or the
tunnelled frame). The gateway must drop and count each, and keep working.

    malformed_burst.py --iface eth0 --dst-mac MAC --src-ip A --dst-ip B [--port 4800]
        [--vni 1] [--inner-src-mac MAC] [--inner-dst-mac MAC] [--repeat N] [--fuzz N]
        [--seed S] [--list]

--list prints the cases and their frames in hex instead of sending. --fuzz adds N frames made
by truncating a valid tunnelled frame at a random length or flipping random bytes of it (seeded,
so a failing burst can be replayed). Frames shorter than an Ethernet header cannot be sent: the
kernel refuses them on an Ethernet device, so the shortest case is a bare Ethernet header.

Uses scapy (Debian python3-scapy) to build frames and a packet socket to send them unchanged.
"""

import argparse
import random
import socket
import sys

from scapy.all import ICMP, IP, IPv6, UDP, Ether, Raw, raw
from scapy.layers.vxlan import VXLAN

ETH_P_ALL = 0x0003


def cases(a):
    """(name, frame) pairs."""
    outer_eth = Ether(dst=a.dst_mac, src=a.src_mac, type=0x0800)
    # EtherTypes explicit: scapy would guess one for a Raw payload.
    inner_eth = Ether(dst=a.inner_dst_mac, src=a.inner_src_mac, type=0x0800)
    inner_ip = IP(src="10.10.1.5", dst="198.51.100.10", ttl=64, id=0x4567)
    inner_icmp = inner_ip / ICMP(id=0xE6E7, seq=1) / Raw(b"egret malformed burst")

    def outer_ip(**fields):
        return IP(src=a.src_ip, dst=a.dst_ip, ttl=64, **fields)

    def udp():
        # Checksum 0: none, as Linux VXLAN sends over IPv4.
        return UDP(sport=49152, dport=a.port, chksum=0)

    def vxlan():
        return VXLAN(flags=0x08, vni=a.vni)

    def tunnelled(inner):
        return raw(outer_eth / outer_ip() / udp() / vxlan() / inner)

    valid = tunnelled(inner_eth / inner_icmp)
    valid_outer_ip = raw(outer_ip() / udp() / vxlan() / inner_eth / inner_icmp)

    def with_bytes(frame, offset, data):
        return frame[:offset] + data + frame[offset + len(data):]

    def ipv4_checksum(header):
        total = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, len(header), 2))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return (~total & 0xFFFF).to_bytes(2, "big")

    def fix_checksum(frame, ip_offset):
        # Over the header the IHL claims where it can be one, else the fixed 20 bytes, so
        # that a case's one defect is the one it names.
        ihl = (frame[ip_offset] & 0x0F) * 4
        length = ihl if 20 <= ihl <= len(frame) - ip_offset else 20
        header = with_bytes(frame[ip_offset:ip_offset + length], 10, b"\0\0")
        return with_bytes(frame, ip_offset + 10, ipv4_checksum(header))

    outer_headers = 14 + 20 + 8
    inner_ip_offset = outer_headers + 8 + 14
    yield "ethernet header only (truncated IPv4)", raw(outer_eth)
    yield "truncated outer IPv4 header (12 bytes)", raw(outer_eth) + valid_outer_ip[:12]
    truncated_udp = raw(outer_ip(proto=17, len=24)) + raw(udp())[:4]
    yield "truncated UDP header (4 bytes)", raw(outer_eth) + fix_checksum(truncated_udp, 0)
    for ihl in (0, 4):
        frame = with_bytes(valid, 14, bytes([0x40 | ihl]))
        yield f"outer IHL {ihl} (< 5)", fix_checksum(frame, 14)
    # IHL 15 says the header is 60 bytes, but the packet's total length is 28: 20 + UDP.
    short = raw(outer_eth / outer_ip() / udp())
    yield "outer IHL 15 beyond the packet", fix_checksum(with_bytes(short, 14, b"\x4f"), 14)
    too_long = with_bytes(valid, 14 + 2, (len(valid) - 14 + 400).to_bytes(2, "big"))
    yield "outer total length beyond the frame", fix_checksum(too_long, 14)
    yield "outer IPv4 bad header checksum", with_bytes(valid, 14 + 10, bytes([valid[24] ^ 0x5A, valid[25] ^ 0xA5]))
    too_long_udp = with_bytes(valid, 14 + 20 + 4, (len(valid) - 34 + 100).to_bytes(2, "big"))
    yield "UDP length beyond the packet", too_long_udp
    yield "VXLAN header truncated (4 bytes)", raw(outer_eth / outer_ip() / udp() / Raw(raw(vxlan())[:4]))
    yield "VXLAN header with no payload", raw(outer_eth / outer_ip() / udp() / vxlan())
    yield "inner Ethernet header truncated (6 bytes)", tunnelled(Raw(raw(inner_eth)[:6]))
    ipv6 = IPv6(src="fd00::5", dst="fd00::10", nh=59) / Raw(b"egret")
    yield "inner frame is IPv6", tunnelled(Ether(dst=a.inner_dst_mac, src=a.inner_src_mac, type=0x86DD) / ipv6)
    yield "inner frame is EtherType 0x88b5", tunnelled(Ether(dst=a.inner_dst_mac, src=a.inner_src_mac, type=0x88B5) / Raw(b"\0" * 46))
    yield "inner IPv4 truncated (10 bytes)", tunnelled(inner_eth / Raw(raw(inner_icmp)[:10]))
    bad_inner_ihl = with_bytes(valid, inner_ip_offset, b"\x43")
    yield "inner IHL 3 (< 5)", fix_checksum(bad_inner_ihl, inner_ip_offset)
    corrupt = bytes([valid[inner_ip_offset + 10] ^ 0x33, valid[inner_ip_offset + 11] ^ 0xCC])
    yield "inner IPv4 bad header checksum", with_bytes(valid, inner_ip_offset + 10, corrupt)

    rng = random.Random(a.seed)
    for n in range(a.fuzz):
        if rng.random() < 0.5:
            frame = valid[:rng.randrange(14, len(valid))]
            yield f"fuzz {n}: truncated to {len(frame)} bytes", frame
        else:
            frame = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                # Only the VXLAN header and the tunnelled frame: with the outer addresses
                # and ports intact every fuzzed frame is still the gateway's to handle.
                frame[rng.randrange(outer_headers, len(frame))] = rng.randrange(256)
            yield f"fuzz {n}: bytes flipped", bytes(frame)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--dst-mac", required=True, help="the MAC the gateway answers ARP for the floating IP with")
    parser.add_argument("--src-mac", help="default: the MAC of --iface")
    parser.add_argument("--src-ip", required=True)
    parser.add_argument("--dst-ip", required=True, help="the floating IP")
    parser.add_argument("--port", type=int, default=4800)
    parser.add_argument("--vni", type=int, default=1)
    parser.add_argument("--inner-src-mac", default="02:e9:e7:00:00:01")
    parser.add_argument("--inner-dst-mac", default="02:e9:e7:00:00:02")
    parser.add_argument("--repeat", type=int, default=1, help="send each case this many times")
    parser.add_argument("--fuzz", type=int, default=0)
    parser.add_argument("--seed", type=int, default=4800)
    parser.add_argument("--list", action="store_true")
    a = parser.parse_args()
    if a.src_mac is None:
        with open(f"/sys/class/net/{a.iface}/address") as f:
            a.src_mac = f.read().strip()

    frames = list(cases(a))
    if a.list:
        for name, frame in frames:
            print(f"{name}: {len(frame)} bytes\n  {frame.hex()}")
        return 0

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((a.iface, ETH_P_ALL))
    sent = 0
    for name, frame in frames:
        for _ in range(a.repeat):
            sock.send(frame)
            sent += 1
    named = sum(1 for name, _ in frames if not name.startswith("fuzz"))
    print(f"sent {sent} frames: {named} cases x {a.repeat}, {a.fuzz} fuzzed x {a.repeat} (seed {a.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
