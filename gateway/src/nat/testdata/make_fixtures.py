#!/usr/bin/python3
"""Writes ../fixtures.rs and the fuzz seed corpus: real packets built by scapy, before and after NAT.

The "after" packets are built from scratch with every checksum computed in full by scapy,
so the tests compare egret's incremental rewrite against an independent full recompute.

    /usr/bin/python3 gateway/src/nat/testdata/make_fixtures.py   (Debian python3-scapy)
"""
import os
from scapy.all import IP, TCP, UDP, ICMP, Raw

POD, NODE, EGRESS, REMOTE = "10.10.1.5", "192.168.1.21", "192.168.1.100", "198.51.100.7"
ROUTER = "198.51.100.1"

def b(pkt):
    return bytes(pkt)

def quote(pkt, tail=8):
    raw = b(pkt)
    ihl = (raw[0] & 0x0F) * 4
    return raw[: ihl + tail]

fx = {}

# TCP handshake with real Linux SYN options; the pod port lies in the NAT range, so it is kept.
syn_opts = [("MSS", 1410), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None), ("WScale", 7)]
fx["TCP_SYN_OUT"] = b(IP(src=POD, dst=REMOTE, id=1, flags="DF", ttl=63) / TCP(sport=40000, dport=443, flags="S", seq=1000, window=64240, options=syn_opts))
fx["TCP_SYN_OUT_NAT"] = b(IP(src=EGRESS, dst=REMOTE, id=1, flags="DF", ttl=63) / TCP(sport=40000, dport=443, flags="S", seq=1000, window=64240, options=syn_opts))
fx["TCP_SYNACK_IN"] = b(IP(src=REMOTE, dst=EGRESS, id=0, flags="DF", ttl=57) / TCP(sport=443, dport=40000, flags="SA", seq=5000, ack=1001, window=65160, options=[("MSS", 1460)]))
fx["TCP_SYNACK_IN_NAT"] = b(IP(src=REMOTE, dst=POD, id=0, flags="DF", ttl=57) / TCP(sport=443, dport=40000, flags="SA", seq=5000, ack=1001, window=65160, options=[("MSS", 1460)]))
fx["TCP_ACK_DATA_OUT"] = b(IP(src=POD, dst=REMOTE, id=2, flags="DF", ttl=63) / TCP(sport=40000, dport=443, flags="PA", seq=1001, ack=5001) / Raw(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"))

# UDP: a DNS-sized query from a port in range (kept), and one without a checksum.
fx["UDP_OUT"] = b(IP(src=POD, dst=REMOTE, id=3, ttl=63) / UDP(sport=40001, dport=53) / Raw(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"))
fx["UDP_OUT_NAT"] = b(IP(src=EGRESS, dst=REMOTE, id=3, ttl=63) / UDP(sport=40001, dport=53) / Raw(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"))
nock = IP(src=POD, dst=REMOTE, id=4, ttl=63) / UDP(sport=40002, dport=9, chksum=0) / Raw(b"no checksum")
fx["UDP_NOCSUM_OUT"] = b(nock)

# ICMP echo; the identifier 0x4242 (16962) lies in the range, so it is kept.
fx["ECHO_OUT"] = b(IP(src=POD, dst=REMOTE, id=5, ttl=63) / ICMP(type=8, id=0x4242, seq=1) / Raw(b"abcdefghijklmnopqrstuvwabcdefghi"))
fx["ECHO_OUT_NAT"] = b(IP(src=EGRESS, dst=REMOTE, id=5, ttl=63) / ICMP(type=8, id=0x4242, seq=1) / Raw(b"abcdefghijklmnopqrstuvwabcdefghi"))
fx["ECHO_REPLY_IN"] = b(IP(src=REMOTE, dst=EGRESS, id=6, ttl=57) / ICMP(type=0, id=0x4242, seq=1) / Raw(b"abcdefghijklmnopqrstuvwabcdefghi"))
fx["ECHO_REPLY_IN_NAT"] = b(IP(src=REMOTE, dst=POD, id=6, ttl=57) / ICMP(type=0, id=0x4242, seq=1) / Raw(b"abcdefghijklmnopqrstuvwabcdefghi"))

# ICMP errors from the outside about translated packets, and the same after translation:
# the quote then shows the pod's own packet, as the pod sent it.
udp_nat = IP(fx["UDP_OUT_NAT"])
udp_pod = IP(fx["UDP_OUT"])
fx["PORT_UNREACH_IN"] = b(IP(src=REMOTE, dst=EGRESS, id=7, ttl=57) / ICMP(type=3, code=3) / Raw(quote(udp_nat)))
fx["PORT_UNREACH_IN_NAT"] = b(IP(src=REMOTE, dst=POD, id=7, ttl=57) / ICMP(type=3, code=3) / Raw(quote(udp_pod)))

syn_nat = IP(fx["TCP_SYN_OUT_NAT"])
syn_pod = IP(fx["TCP_SYN_OUT"])
fx["FRAG_NEEDED_IN"] = b(IP(src=ROUTER, dst=EGRESS, id=8, ttl=60) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(quote(syn_nat)))
fx["FRAG_NEEDED_IN_NAT"] = b(IP(src=ROUTER, dst=POD, id=8, ttl=60) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(quote(syn_pod)))
# A router that quotes more than 8 bytes (RFC 1812 allows it): the TCP checksum is in the quote.
fx["TCP_LONG_QUOTE_IN"] = b(IP(src=ROUTER, dst=EGRESS, id=9, ttl=60) / ICMP(type=11, code=0) / Raw(quote(syn_nat, 40)))
fx["TCP_LONG_QUOTE_IN_NAT"] = b(IP(src=ROUTER, dst=POD, id=9, ttl=60) / ICMP(type=11, code=0) / Raw(quote(syn_pod, 40)))

echo_nat = IP(fx["ECHO_OUT_NAT"])
echo_pod = IP(fx["ECHO_OUT"])
fx["TTL_EXCEEDED_ECHO_IN"] = b(IP(src=ROUTER, dst=EGRESS, id=10, ttl=60) / ICMP(type=11, code=0) / Raw(quote(echo_nat)))
fx["TTL_EXCEEDED_ECHO_IN_NAT"] = b(IP(src=ROUTER, dst=POD, id=10, ttl=60) / ICMP(type=11, code=0) / Raw(quote(echo_pod)))

# A pod answering a reply from the outside with port unreachable (its socket closed).
reply_to_pod = IP(src=REMOTE, dst=POD, id=11, ttl=57) / UDP(sport=53, dport=40001) / Raw(b"late answer")
reply_to_egress = IP(src=REMOTE, dst=EGRESS, id=11, ttl=57) / UDP(sport=53, dport=40001) / Raw(b"late answer")
fx["POD_PORT_UNREACH_OUT"] = b(IP(src=POD, dst=REMOTE, id=12, ttl=64) / ICMP(type=3, code=3) / Raw(quote(reply_to_pod)))
fx["POD_PORT_UNREACH_OUT_NAT"] = b(IP(src=EGRESS, dst=REMOTE, id=12, ttl=64) / ICMP(type=3, code=3) / Raw(quote(reply_to_egress)))

out = ["// @generated by testdata/make_fixtures.py (scapy); do not edit by hand.",
       "//! Real packets before and after NAT. Pod 10.10.1.5 on node 192.168.1.21, egress",
       "//! 192.168.1.100, remote 198.51.100.7, router 198.51.100.1.", ""]
for name, data in fx.items():
    body = ", ".join(f"0x{x:02x}" for x in data)
    out.append(f"pub const {name}: [u8; {len(data)}] = [{body}];")
here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "fixtures.rs")
with open(path, "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote", os.path.normpath(path))

# The same packets seed the fuzzer.
seeds = os.path.join(here, "..", "..", "..", "fuzz", "seeds", "nat_translate")
os.makedirs(seeds, exist_ok=True)
for name, data in fx.items():
    with open(os.path.join(seeds, name.lower() + ".bin"), "wb") as f:
        f.write(data)
print("wrote", len(fx), "seeds to", os.path.normpath(seeds))
