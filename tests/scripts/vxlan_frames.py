#!/usr/bin/python3
"""Hand-made VXLAN frames to a gateway, as a node's tunnel carries them, from any outer
source address: a stranger spoofing a node's address, or a node crafting what its kernel's
tunnel would not send (martian inner destinations).

    vxlan_frames.py --iface eth0 --outer-src IP --outer-dst IP --dst-mac MAC
        [--vni N] [--port P] [--inner-src-mac MAC] [--rate N] [--count N | --duration S]
        FRAME ...

FRAME is one of
    udp:SRC:SPORT:DST:DPORT[:LEN]   an IPv4 UDP datagram inside, whose payload starts with
                                    "egret-vxlan" and pads the inner IPv4 packet to LEN bytes
    arp:SENDER:TARGET               an ARP request inside (who has TARGET, tell SENDER), as
                                    a node's tunnel device asks for its next hop

Each frame is a whole Ethernet frame sent unchanged through a packet socket bound to IFACE
(no route or address needed for the outer source), from IFACE's MAC to --dst-mac, UDP to
--port (4800) with network identifier --vni (1); the inner frame comes from --inner-src-mac
(default: IFACE's MAC) to the gateway's MAC. The FRAMEs go out in turn, --rate a second,
--count in all (default: one round) or round after round for --duration seconds.

Prints "ready" just before the first frame leaves and, at the end, "sent N last T" (T the
wall-clock time the last one left, Unix seconds) and "sent KIND N" per FRAME. Run by the
hostile-node lab inside the stranger's or the node's namespace; uses scapy to build frames.
"""

import argparse
import socket
import sys
import time

from scapy.all import ARP, IP, UDP, Ether, Raw, raw
from scapy.layers.vxlan import VXLAN


def inner(kind, a, gw_mac):
    parts = kind.split(":")
    if parts[0] == "udp":
        src, sport, dst, dport = parts[1], int(parts[2]), parts[3], int(parts[4])
        length = int(parts[5]) if len(parts) > 5 else 0
        payload = b"egret-vxlan " + kind.encode()
        payload += b"." * max(0, length - 28 - len(payload))
        packet = IP(src=src, dst=dst, ttl=64) / UDP(sport=sport, dport=dport) / Raw(payload)
        return Ether(src=a.inner_src_mac, dst=gw_mac) / packet
    if parts[0] == "arp":
        sender, target = parts[1], parts[2]
        return Ether(src=a.inner_src_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=a.inner_src_mac, psrc=sender, hwdst="00:00:00:00:00:00", pdst=target)
    raise SystemExit(f"unknown frame {kind!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iface", default="eth0")
    parser.add_argument("--outer-src", required=True)
    parser.add_argument("--outer-dst", required=True)
    parser.add_argument("--dst-mac", required=True)
    parser.add_argument("--vni", type=int, default=1)
    parser.add_argument("--port", type=int, default=4800)
    parser.add_argument("--inner-src-mac")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--count", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("frames", nargs="+")
    a = parser.parse_args()
    with open(f"/sys/class/net/{a.iface}/address") as f:
        own_mac = f.read().strip()
    if a.inner_src_mac is None:
        a.inner_src_mac = own_mac

    frames = []
    for kind in a.frames:
        outer = Ether(src=own_mac, dst=a.dst_mac) / IP(src=a.outer_src, dst=a.outer_dst, ttl=64)
        outer = outer / UDP(sport=49152 + len(frames), dport=a.port) / VXLAN(vni=a.vni, flags=0x08)
        frames.append((kind, raw(outer / inner(kind, a, a.dst_mac))))
    count = a.count if a.count is not None else len(frames)

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((a.iface, 0))
    print("ready", flush=True)
    start = time.monotonic()
    sent = {kind: 0 for kind, _ in frames}
    n = 0
    while True:
        if a.duration is not None:
            if time.monotonic() - start >= a.duration:
                break
        elif n >= count:
            break
        kind, data = frames[n % len(frames)]
        delay = start + n / a.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.send(data)
        sent[kind] += 1
        n += 1
    print(f"sent {n} last {time.time():.6f}", flush=True)
    for kind, number in sent.items():
        print(f"sent {kind} {number}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
