#!/usr/bin/python3
"""Prints the source address of the first TCP connection, UDP datagram and ICMP echo request
that reach ADDRESS, one line each ("tcp 192.168.50.100"), after a "ready" line once listening.

Run by the gateway lab inside the outside server's namespace: what it prints is the egress
address the outside world sees. Exits 0 once it has seen all three, 1 after TIMEOUT seconds.

    peer_sources.py ADDRESS TCP_PORT UDP_PORT TIMEOUT
"""

import select
import socket
import sys
import time

ICMP_ECHO_REQUEST = 8


def main():
    address, tcp_port, udp_port, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((address, tcp_port))
    tcp.listen(8)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, udp_port))
    # A raw ICMP socket gets a copy of every ICMP packet for this host; the kernel still
    # answers the echo itself.
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("ready", flush=True)

    seen = {}
    deadline = time.monotonic() + timeout
    while len(seen) < 3:
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"timeout: saw only {sorted(seen)}", file=sys.stderr)
            return 1
        readable, _, _ = select.select([tcp, udp, icmp], [], [], left)
        for sock in readable:
            if sock is tcp:
                conn, peer = tcp.accept()
                conn.close()
                kind, source = "tcp", peer[0]
            elif sock is udp:
                _, peer = udp.recvfrom(65535)
                kind, source = "udp", peer[0]
            else:
                packet, peer = icmp.recvfrom(65535)
                ihl = (packet[0] & 0x0F) * 4
                destination = socket.inet_ntoa(packet[16:20])
                if len(packet) <= ihl or packet[ihl] != ICMP_ECHO_REQUEST or destination != address:
                    continue
                kind, source = "icmp", peer[0]
            if kind not in seen:
                seen[kind] = source
                print(f"{kind} {source}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
