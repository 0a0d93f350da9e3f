#!/usr/bin/python3
"""Sends VRRPv3 adverts (RFC 5798, IPv4) as a hostile host on the gateways' LAN would: from
its own address or spoofing another, to 224.0.0.18 or unicast to one gateway, at any
priority and Max Adver Int, with or without the floating IP in the address list.

    vrrp_adverts.py --iface eth0 --src-ip A --dst-ip B [--dst-mac MAC] --vrid N
        --priority P --interval CS --address X [--address Y ...] [--count N]
        [--period SECONDS] [--list]

Run by the hostile-election lab inside the stranger's namespace. Each advert is a whole
Ethernet frame sent unchanged through a packet socket bound to IFACE (so a spoofed source
needs no route and no address): TTL 255 and a checksum over the IPv4 pseudo-header, as
keepalived and egret send them, so that a gateway's refusal is its election's, never the
wire checks'. --dst-mac defaults to the VRRP multicast MAC. --list prints the frame in hex
instead of sending. Prints "ready" just before the first advert leaves (importing scapy
takes a while) and, at the end, "sent N last T": T the wall-clock time (Unix seconds) the
last advert left.

Uses scapy (Debian python3-scapy) to build the frames.
"""

import argparse
import socket
import sys
import time

from scapy.all import IP, Ether, raw
from scapy.layers.vrrp import VRRPv3

ETH_P_ALL = 0x0003
MULTICAST_MAC = "01:00:5e:00:00:12"


def frame(a):
    advert = VRRPv3(vrid=a.vrid, priority=a.priority, ipcount=len(a.address), adv=a.interval, addrlist=a.address)
    packet = IP(src=a.src_ip, dst=a.dst_ip, ttl=255, proto=112, tos=0xC0) / advert
    return raw(Ether(dst=a.dst_mac, src=a.src_mac, type=0x0800) / packet)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--src-mac", help="default: the MAC of --iface")
    parser.add_argument("--src-ip", required=True)
    parser.add_argument("--dst-ip", required=True, help="224.0.0.18, or a gateway's address")
    parser.add_argument("--dst-mac", default=MULTICAST_MAC, help="that gateway's MAC for unicast")
    parser.add_argument("--vrid", type=int, required=True)
    parser.add_argument("--priority", type=int, required=True)
    parser.add_argument("--interval", type=int, required=True, help="Max Adver Int, centiseconds (0..4095)")
    parser.add_argument("--address", action="append", required=True, help="an address of the list (repeat)")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--period", type=float, default=0.02, help="seconds between adverts")
    parser.add_argument("--list", action="store_true")
    a = parser.parse_args()
    if a.src_mac is None:
        with open(f"/sys/class/net/{a.iface}/address") as f:
            a.src_mac = f.read().strip()

    data = frame(a)
    if a.list:
        print(data.hex())
        return 0

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((a.iface, ETH_P_ALL))
    print("ready", flush=True)
    start = time.monotonic()
    for n in range(a.count):
        # Paced against the start, so the rate holds whatever a send costs.
        delay = start + n * a.period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.send(data)
    last = time.time()
    print(f"sent {a.count} last {last:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
