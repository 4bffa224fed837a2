"""Checks of the lab client's GeoDNS step (client.dns_query_a) against a small DNS responder on
loopback: the answer's A records in order (compressed names), error codes, a reply for another
query, a truncated reply, and the walk over the name servers (one that timed out asked last
for a while). Run with `python3 -m unittest benches/regions/test_client.py`
(tests/region_lab.rs does)."""

import socket
import struct
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import client  # noqa: E402


class Responder:
    """Answers each query once with `make(query) -> bytes`."""

    def __init__(self, make):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.address = self.sock.getsockname()
        self.make = make
        self.seen_from = None
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            query, peer = self.sock.recvfrom(4096)
        except OSError:
            return
        self.seen_from = peer[0]
        self.sock.sendto(self.make(query), peer)

    def close(self):
        self.thread.join(5)
        self.sock.close()


def answer(query, addresses, rcode=0, id_delta=0):
    query_id = struct.unpack(">H", query[:2])[0]
    question = query[12:]
    header = struct.pack(">HHHHHH", (query_id + id_delta) & 0xFFFF, 0x8400 | rcode, 1,
                         len(addresses), 0, 0)
    records = b"".join(
        struct.pack(">HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(a) for a in addresses
    )
    return header + question + records


class DnsQuery(unittest.TestCase):
    def query(self, make):
        responder = Responder(make)
        try:
            return client.dns_query_a(responder.address, "api.example.com", "127.0.0.1", 2.0), \
                responder
        finally:
            responder.close()

    def test_a_records_in_answer_order(self):
        got, responder = self.query(lambda q: answer(q, ["10.77.0.2", "10.77.0.1"]))
        self.assertEqual(got, ["10.77.0.2", "10.77.0.1"])
        self.assertEqual(responder.seen_from, "127.0.0.1")

    def test_query_names_the_service(self):
        seen = {}

        def make(query):
            seen["question"] = query[12:]
            return answer(query, ["10.77.0.3"])

        self.query(make)
        self.assertEqual(seen["question"], b"\x03api\x07example\x03com\x00\x00\x01\x00\x01")

    def test_error_code_gives_no_answer(self):
        got, _ = self.query(lambda q: answer(q, ["10.77.0.1"], rcode=3))  # NXDOMAIN
        self.assertEqual(got, [])

    def test_reply_to_another_query_is_ignored(self):
        got, _ = self.query(lambda q: answer(q, ["10.77.0.1"], id_delta=1))
        self.assertEqual(got, [])

    def test_truncated_reply_raises_for_the_caller_to_skip(self):
        with self.assertRaises(ValueError):
            self.query(lambda q: answer(q, ["10.77.0.1"])[:-6])

    def test_many_records(self):
        many = [f"10.77.{i // 250}.{i % 250 + 1}" for i in range(200)]
        got, _ = self.query(lambda q: answer(q, many))
        self.assertEqual(got, many)

    def test_resolver_walks_the_name_servers_in_order(self):
        # The first server times out (nothing listens); the second answers.
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        responder = Responder(lambda q: answer(q, ["10.77.0.2"]))
        spec = {
            "name": "api.example.com",
            "dns": "geodns",
            "dns_timeout": 0.3,
            "dns_servers": {"us-east-1": [list(silent.getsockname()), list(responder.address)]},
        }
        try:
            self.assertEqual(client.resolve(spec, "us-east-1", "127.0.0.1"), ["10.77.0.2"])
        finally:
            responder.close()
            silent.close()

    def test_resolver_asks_a_server_that_timed_out_last_until_it_is_forgotten(self):
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        now = [100.0]
        memory = client.ServerMemory(60.0, clock=lambda: now[0])
        spec = {
            "name": "api.example.com",
            "dns": "geodns",
            "dns_timeout": 0.3,
            "dns_servers": {"us-east-1": [list(silent.getsockname())]},
        }
        try:
            # The first step waits out the silent server, then the second answers.
            responder = Responder(lambda q: answer(q, ["10.77.0.2"]))
            spec["dns_servers"]["us-east-1"].append(list(responder.address))
            started = time.monotonic()
            got = client.resolve(spec, "us-east-1", "127.0.0.1", memory=memory)
            responder.close()
            self.assertEqual(got, ["10.77.0.2"])
            self.assertGreaterEqual(time.monotonic() - started, 0.3)
            # Remembered: the next step asks the other server first and does not wait.
            responder = Responder(lambda q: answer(q, ["10.77.0.2"]))
            spec["dns_servers"]["us-east-1"][1] = list(responder.address)
            started = time.monotonic()
            got = client.resolve(spec, "us-east-1", "127.0.0.1", memory=memory)
            responder.close()
            self.assertEqual(got, ["10.77.0.2"])
            self.assertLess(time.monotonic() - started, 0.3)
            self.assertEqual(memory.order(spec["dns_servers"]["us-east-1"])[0],
                             spec["dns_servers"]["us-east-1"][1])
            # Still asked when it is the only one left, and forgotten after the TTL.
            self.assertEqual(memory.order(spec["dns_servers"]["us-east-1"][:1]),
                             spec["dns_servers"]["us-east-1"][:1])
            now[0] += 60.0
            self.assertEqual(memory.order(spec["dns_servers"]["us-east-1"]),
                             spec["dns_servers"]["us-east-1"])
        finally:
            silent.close()

    def test_resolver_without_memory_asks_in_order_every_time(self):
        memory = client.ServerMemory(0.0)
        memory.timed_out(("127.0.0.1", 53))
        self.assertEqual(memory.order([["127.0.0.1", 53], ["127.0.0.2", 53]]),
                         [["127.0.0.1", 53], ["127.0.0.2", 53]])


class RelayClientSubnet(unittest.TestCase):
    def test_relay_adds_the_clients_subnet_and_the_answer_still_parses(self):
        import relay  # noqa: E402

        query = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x03api\x00\x00\x01\x00\x01"
        sent = relay.with_client_subnet(query, "192.0.2.10")
        self.assertEqual(struct.unpack(">H", sent[10:12])[0], 1)  # ARCOUNT
        # OPT: root name, type 41, then the ECS option: code 8, family 1, /24, scope 0, 3 bytes.
        self.assertEqual(sent[len(query):len(query) + 3], b"\x00\x00\x29")
        self.assertTrue(sent.endswith(struct.pack(">HHHBB", 8, 7, 1, 24, 0) + b"\xc0\x00\x02"))
        self.assertEqual(relay.with_client_subnet(sent, "192.0.2.10"), sent)  # already has one
        ttls = []
        got = client.parse_a_answer(answer(query, ["10.77.0.2"]), 7, ttls)
        self.assertEqual((got, ttls), (["10.77.0.2"], [5]))


if __name__ == "__main__":
    unittest.main()
