#!/usr/bin/python3
"""Writes the seed corpus of the datapath_frames fuzz target with scapy.

Each seed is one mode byte (0: no offload) followed by an Ethernet frame as a node, the
router or a neighbour would send it to the gateway of the fuzz target.
"""
import os
from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, VXLAN, raw

GW = "02:00:00:00:00:11"
NODE = "02:00:00:00:00:21"
NODE_VX = "02:00:00:00:01:21"
ROUTER = "02:00:00:00:00:01"
FIP = "192.168.1.100"


def tunnelled(inner, vni=1):
    return Ether(dst=GW, src=NODE) / IP(src="192.168.1.21", dst=FIP) / UDP(sport=50000, dport=4800) / VXLAN(vni=vni) / inner


pod = Ether(dst=GW, src=NODE_VX)
seeds = {
    "vxlan_udp": tunnelled(pod / IP(src="10.10.1.5", dst="198.51.100.10") / UDP(sport=40000, dport=53) / b"query"),
    "vxlan_tcp_syn": tunnelled(pod / IP(src="10.10.1.5", dst="198.51.100.10") / TCP(sport=40001, dport=443, flags="S")),
    "vxlan_echo": tunnelled(pod / IP(src="10.10.1.5", dst="198.51.100.10") / ICMP(id=7) / b"ping"),
    "vxlan_arp": tunnelled(Ether(dst="ff:ff:ff:ff:ff:ff", src=NODE_VX) / ARP(psrc="169.254.100.2", pdst="169.254.100.1", hwsrc=NODE_VX)),
    "reply_udp": Ether(dst=GW, src=ROUTER) / IP(src="198.51.100.10", dst=FIP) / UDP(sport=53, dport=40000) / b"answer",
    "reply_tcp": Ether(dst=GW, src=ROUTER) / IP(src="198.51.100.10", dst=FIP) / TCP(sport=443, dport=40001, flags="SA"),
    "echo_to_fip": Ether(dst=GW, src=NODE) / IP(src="192.168.1.21", dst=FIP) / ICMP() / b"hello",
    "arp_for_fip": Ether(dst="ff:ff:ff:ff:ff:ff", src=ROUTER) / ARP(psrc="192.168.1.1", pdst=FIP, hwsrc=ROUTER),
}
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datapath_frames")
os.makedirs(here, exist_ok=True)
for name, frame in seeds.items():
    with open(os.path.join(here, name + ".bin"), "wb") as f:
        f.write(b"\x00" + raw(frame))
