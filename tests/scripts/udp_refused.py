#!/usr/bin/python3
"""Sends a UDP datagram from BIND_ADDRESS to DESTINATION:PORT (a closed port, or with a TTL
too small to get there) and reports the ICMP error that comes back, read from the socket's
error queue (IP_RECVERR):

    refused origin=icmp type=3 code=3 offender=198.51.100.10
    error origin=icmp type=11 code=0 offender=192.168.50.100

Exits 0 when an ICMP error arrived, 1 when nothing came within TIMEOUT seconds (the datagram
is re-sent every half second: the sender's kernel rate-limits ICMP errors).

    udp_refused.py BIND_ADDRESS DESTINATION PORT [TIMEOUT [TTL]]
"""

import errno
import select
import socket
import struct
import sys
import time

IP_RECVERR = 11
SO_EE_ORIGIN_ICMP = 2


def main():
    bind, destination, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    if len(sys.argv) > 5:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, int(sys.argv[5]))
    sock.bind((bind, 0))
    sock.connect((destination, port))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sock.send(b"egret port unreachable probe")
        except ConnectionRefusedError:
            # The error of an earlier probe, reported on this send; it is in the queue too.
            pass
        select.select([sock], [], [], 0.5)
        try:
            _, ancdata, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        except BlockingIOError:
            continue
        except OSError as err:
            if err.errno == errno.EAGAIN:
                continue
            raise
        for level, kind, data in ancdata:
            if level != socket.IPPROTO_IP or kind != IP_RECVERR:
                continue
            # struct sock_extended_err, then the offender's sockaddr_in.
            ee_errno, origin, icmp_type, icmp_code = struct.unpack_from("=IBBB", data)
            offender = socket.inet_ntoa(data[16 + 4:16 + 8]) if len(data) >= 24 else "?"
            origin_name = "icmp" if origin == SO_EE_ORIGIN_ICMP else str(origin)
            print(f"{'refused' if ee_errno == errno.ECONNREFUSED else 'error'} "
                  f"origin={origin_name} type={icmp_type} code={icmp_code} offender={offender}",
                  flush=True)
            return 0 if origin == SO_EE_ORIGIN_ICMP else 1
    print(f"no ICMP error within {timeout}s", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
