#!/usr/bin/python3
"""Sends COUNT well-formed VXLAN packets with network identifier VNI from BIND_ADDRESS to
DESTINATION:PORT through an ordinary UDP socket, 10 ms apart. Each carries an ICMP echo
request from 10.10.1.5 to 198.51.100.10, as a node's tunnel would.

The gateway lab sends them from hosts or with VNIs the gateway must refuse, and checks that
its drop counters grow by exactly COUNT.

    vxlan_send.py BIND_ADDRESS DESTINATION PORT VNI COUNT
"""

import socket
import struct
import sys
import time

from inet import checksum


def inner_frame(sequence):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0xE6E7, sequence) + b"egret stray vxlan"
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), sequence, 0, 64, 1, 0,
                         socket.inet_aton("10.10.1.5"), socket.inet_aton("198.51.100.10"))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    ethernet = bytes.fromhex("02e9e7000001") + bytes.fromhex("02e9e7000002") + b"\x08\x00"
    return ethernet + header + icmp


def main():
    bind, destination, port, vni, count = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                           int(sys.argv[4]), int(sys.argv[5]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, 0))
    vxlan = struct.pack("!II", 0x08000000, vni << 8)
    for sequence in range(count):
        sock.sendto(vxlan + inner_frame(sequence), (destination, port))
        time.sleep(0.01)
    print(f"sent {count} VXLAN packets with VNI {vni} from {bind} to {destination}:{port}")


if __name__ == "__main__":
    main()
