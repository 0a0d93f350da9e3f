#!/usr/bin/python3
"""UDP flows for the hostile-pod lab test: a sink on the outside server, a flood of new flows
from one pod address, and probes that open new flows from another.

    udp_flows.py sink ADDRESS FLOOD_PORT PROBE_PORT
        Prints "ready" once listening. Counts the flood's datagrams on FLOOD_PORT and their
        distinct sources (address, port: one per flow the gateway let through); answers each
        datagram on PROBE_PORT with its own payload and, the first time it sees a payload,
        prints "probe <source address> <payload> <flood sources> <flood datagrams>". Runs
        until stopped (SIGTERM).

    udp_flows.py flood SOURCE DESTINATION PORT FIRST_PORT PORTS RATE
        Sends one small datagram from each of SOURCE:FIRST_PORT .. +PORTS to DESTINATION:PORT,
        round after round, each round in a new random order, RATE datagrams a second, until
        stopped (SIGTERM). Every source port is a flow of its own; after the first round,
        ports that got a mapping only refresh it, and the random order spreads them over the
        round, so refused and admitted datagrams alternate all the time.

    udp_flows.py probe SOURCE DESTINATION PORT FIRST_PORT COUNT TAG [PAUSE]
        Opens COUNT new flows, SOURCE:FIRST_PORT .. +COUNT to DESTINATION:PORT, one after
        the other, PAUSE seconds apart (default 0): sends "TAG-<i>" and waits for the echo,
        re-sending up to 10 times 0.3 s apart. Prints "ok <i>" or "lost <i>" per flow; exits
        0 when every echo came back, 1 otherwise.

The lab runs each of them in a lab namespace (`ip netns exec`), bound to that namespace's
addresses.
"""

import random
import select
import signal
import socket
import sys
import time


class Stop(Exception):
    pass


def stop(_signum, _frame):
    raise Stop()


def sink(address, flood_port, probe_port):
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    flood.bind((address, flood_port))
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((address, probe_port))
    print("ready", flush=True)
    sources = set()
    datagrams = 0
    seen = set()
    try:
        while True:
            readable, _, _ = select.select([flood, probe], [], [])
            if flood in readable:
                # Drain what is there, a bounded amount: the flood must not starve the probes.
                for _ in range(256):
                    try:
                        _, peer = flood.recvfrom(2048, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    datagrams += 1
                    sources.add(peer)
            if probe in readable:
                payload, peer = probe.recvfrom(2048)
                probe.sendto(payload, peer)
                text = payload.decode(errors="replace")
                if text not in seen:
                    seen.add(text)
                    print(f"probe {peer[0]} {text} {len(sources)} {datagrams}", flush=True)
    except Stop:
        pass
    return 0


def flood(source, destination, port, first, ports, rate):
    # A socket per datagram, closed at once: any number of source ports without as many
    # open files.
    target = (destination, port)
    batch = 50
    interval = batch / rate
    next_batch = time.monotonic()
    order = list(range(first, first + ports))
    i = len(order)
    try:
        while True:
            for _ in range(batch):
                if i == len(order):
                    random.shuffle(order)
                    i = 0
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((source, order[i]))
                    s.sendto(b"flood", target)
                except OSError:
                    pass
                finally:
                    s.close()
                i += 1
            next_batch += interval
            pause = next_batch - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                # Behind (a busy machine): do not try to catch up in a burst.
                next_batch = time.monotonic()
    except Stop:
        pass
    return 0


def probe(source, destination, port, first, count, tag, pause):
    lost = 0
    for i in range(count):
        if i and pause:
            time.sleep(pause)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source, first + i))
        s.connect((destination, port))
        payload = f"{tag}-{i}".encode()
        answered = False
        for _ in range(10):
            try:
                s.send(payload)
            except ConnectionRefusedError:
                continue
            readable, _, _ = select.select([s], [], [], 0.3)
            if readable:
                try:
                    if s.recv(2048) == payload:
                        answered = True
                        break
                except ConnectionRefusedError:
                    pass
        s.close()
        print(f"{'ok' if answered else 'lost'} {i}", flush=True)
        lost += not answered
    return 1 if lost else 0


def main():
    signal.signal(signal.SIGTERM, stop)
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "sink":
        return sink(args[0], int(args[1]), int(args[2]))
    if mode == "flood":
        return flood(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), float(args[5]))
    if mode == "probe":
        pause = float(args[6]) if len(args) > 6 else 0.0
        return probe(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), args[5], pause)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
