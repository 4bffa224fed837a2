"""Checks of the lab's delay relay (relay.py) on loopback, run as the lab runs it (a subprocess
given its JSON spec), with a 40 ms one-way delay in front of a local echo server: a new
connection's first answer takes the handshake's round trip, the request's and the answer's
one-way delays (4 x one-way), a second exchange on it one round trip; a refused connection is
reset a round trip after the connect. Run with `python3 -m unittest benches/regions/test_relay.py`
(tests/region_lab.rs does)."""

import json
import socket
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

RELAY = Path(__file__).resolve().parent / "relay.py"
ONE_WAY = 0.040
JITTER = 0.1
LOW = 1 - JITTER
# Upper bounds with room for a loaded machine: they only catch a hold far too long.
SLACK = 0.5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Echo:
    """Echoes whatever each connection sends."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    @staticmethod
    def echo(conn):
        with conn:
            for _ in range(1000):
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    def close(self):
        self.sock.close()


class Relay:
    def __init__(self, target_port):
        self.port = free_port()
        spec = {
            "sources": {"127.0.0.0/8": "peer"},
            "delays_ms": {"peer": ONE_WAY * 1000},
            "default_ms": ONE_WAY * 1000,
            "jitter": JITTER,
            "tcp": [{"listen": ["127.0.0.1", self.port], "target": ["127.0.0.1", target_port]}],
        }
        self.process = subprocess.Popen(
            [sys.executable, str(RELAY), json.dumps(spec)], stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if line.strip() != "relay ready":
            self.close()
            raise RuntimeError(f"relay did not start: {line!r}")

    def close(self):
        self.process.terminate()
        self.process.wait(10)
        self.process.stdout.close()


def exchange(conn, data):
    """Seconds from sending `data` until all of it came back."""
    started = time.monotonic()
    conn.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the echo")
        got += chunk
    return time.monotonic() - started


class RelayTiming(unittest.TestCase):
    def setUp(self):
        self.echo = Echo()
        self.relay = Relay(self.echo.port)

    def tearDown(self):
        self.relay.close()
        self.echo.close()

    def test_new_connection_pays_the_handshake_round_trip(self):
        for _ in range(3):
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", self.relay.port), timeout=5) as conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                exchange(conn, b"first")
                first = time.monotonic() - started
                second = exchange(conn, b"second")
            # Handshake (2 x one-way), the request, the echo: 4 x one-way.
            self.assertGreaterEqual(first, 4 * ONE_WAY * LOW, f"first exchange {first:.3f} s")
            self.assertLess(first, 4 * ONE_WAY * (1 + JITTER) + SLACK)
            # Same connection: one round trip; below the least a handshake more would take.
            self.assertGreaterEqual(second, 2 * ONE_WAY * LOW, f"second exchange {second:.3f} s")
            self.assertLess(second, 4 * ONE_WAY * LOW, f"second exchange {second:.3f} s")

    def test_request_sent_after_the_handshake_pays_no_more(self):
        with socket.create_connection(("127.0.0.1", self.relay.port), timeout=5) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            time.sleep(3 * ONE_WAY)
            took = exchange(conn, b"late")
        self.assertGreaterEqual(took, 2 * ONE_WAY * LOW, f"{took:.3f} s")
        self.assertLess(took, 4 * ONE_WAY * LOW, f"{took:.3f} s")

    def test_refused_target_resets_after_a_round_trip(self):
        self.relay.close()
        self.relay = Relay(free_port())  # nothing listens there
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.relay.port), timeout=5) as conn:
            conn.sendall(b"hello")
            with self.assertRaises(ConnectionResetError):
                for _ in range(10):
                    if not conn.recv(65536):
                        break
        took = time.monotonic() - started
        self.assertGreaterEqual(took, 2 * ONE_WAY * LOW, f"{took:.3f} s")
        self.assertLess(took, 2 * ONE_WAY * (1 + JITTER) + SLACK, f"{took:.3f} s")


if __name__ == "__main__":
    unittest.main()
