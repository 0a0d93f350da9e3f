#!/usr/bin/python3
"""Path MTU discovery through the gateway, seen from both ends of a UDP exchange.

    pmtu_probe.py server PORT TIMEOUT
        Prints "ready" once bound. Waits for one datagram on PORT, then answers its sender with 1472-byte datagrams
        (1500 bytes of IPv4) with DF set, until the kernel has learnt a smaller path MTU
        from an ICMP "fragmentation needed", and prints it:

            path mtu=1450

        Exits 1 if the path MTU is still 1500 after TIMEOUT seconds.

    pmtu_probe.py client BIND_ADDRESS SERVER PORT COUNT
        Sends COUNT small datagrams to SERVER:PORT, one every 0.2 s.
"""

import socket
import sys
import time

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IP_MTU = 14
REPLY = b"m" * 1472


def server(port, timeout):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(timeout)
    print("ready", flush=True)
    _, peer = sock.recvfrom(2048)
    sock.connect(peer)
    deadline = time.monotonic() + timeout
    mtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
    while time.monotonic() < deadline:
        try:
            sock.send(REPLY)
        except OSError:
            # EMSGSIZE: the kernel already knows the reply no longer fits.
            pass
        time.sleep(0.2)
        mtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
        if mtu < 1500:
            break
    print(f"path mtu={mtu}", flush=True)
    return 0 if mtu < 1500 else 1


def client(bind, destination, port, count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, 0))
    for _ in range(count):
        sock.sendto(b"egret pmtu probe", (destination, port))
        time.sleep(0.2)
    return 0


def main():
    if sys.argv[1] == "server":
        return server(int(sys.argv[2]), float(sys.argv[3]))
    return client(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))


if __name__ == "__main__":
    sys.exit(main())
