#!/usr/bin/python3
"""Sends bare TCP segments, as a host whose connection the other side no longer has would:
an outside server writing to a floating IP and NAT port after its connection's mapping was
deleted, or to a mapping it never had.

    tcp_segments.py --src-ip IP --sport PORT --dst-ip IP --dport PORT [--dport PORT ...]
        [--flags A] [--count N]

Sends COUNT segments (default 3, 20 ms apart) to each --dport with the given flags (scapy's
notation: A, PA, S, ...) and a payload "egret-stale", through the namespace's own routes
(scapy at layer 3, so the kernel picks the next hop). Prints "sent N last T" at the end,
T the wall-clock time the last one left (Unix seconds). Run by the lab inside the outside
server's namespace.
"""

import argparse
import sys
import time

from scapy.all import IP, TCP, Raw, conf, send


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src-ip", required=True)
    parser.add_argument("--sport", type=int, required=True)
    parser.add_argument("--dst-ip", required=True)
    parser.add_argument("--dport", type=int, action="append", required=True)
    parser.add_argument("--flags", default="A")
    parser.add_argument("--count", type=int, default=3)
    a = parser.parse_args()
    conf.verb = 0
    sent = 0
    print("ready", flush=True)
    for dport in a.dport:
        for i in range(a.count):
            segment = IP(src=a.src_ip, dst=a.dst_ip) / TCP(
                sport=a.sport, dport=dport, flags=a.flags, seq=1000 + i, ack=1) / Raw(b"egret-stale")
            send(segment)
            sent += 1
            time.sleep(0.02)
    print(f"sent {sent} last {time.time():.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
