#!/usr/bin/python3
"""Churns a NAT's flow table: one UDP socket sends one small datagram to each of PORTS
destination ports in turn, round after round, RATE datagrams a second. Every destination
port is a flow of its own; with a NAT's UDP timeout shorter than a round, every datagram
opens a new flow, and every flow expires: two flow changes per datagram for a gateway to
stream to its peers.

    udp_churn.py SOURCE SOURCE_PORT DESTINATION FIRST_PORT PORTS RATE

Prints "ready" just before the first datagram and, when stopped (SIGTERM), "sent N".
The lab runs it in the pod's namespace, bound to the pod's address; the destination drops
the datagrams without an answer.
"""

import signal
import socket
import sys
import time


class Stop(Exception):
    pass


def stop(_signum, _frame):
    raise Stop()


def main():
    source, source_port, destination = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    first, ports, rate = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    signal.signal(signal.SIGTERM, stop)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, source_port))
    payload = b"egret churn"
    sent = 0
    print("ready", flush=True)
    start = time.monotonic()
    try:
        while True:
            # A millisecond's worth at a time: the pace holds without a sleep per datagram.
            due = int((time.monotonic() - start) * rate) + 1
            while sent < due:
                try:
                    sock.sendto(payload, (destination, first + sent % ports))
                except OSError:
                    # A full socket buffer or no route for a moment: the churn goes on.
                    pass
                sent += 1
            time.sleep(0.001)
    except Stop:
        pass
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
