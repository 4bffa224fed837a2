"""The lab's load generator: users in US, EU and APAC, run by run.py inside the clients
namespace, each worker from its own source address in the demo GeoIP ranges.

A worker resolves the service name (the DNS step: `resolve`; GeoDNS answers are cached for
their TTL, as a stub resolver's cache does, and a name server that timed out is asked last for
a while, as a recursive resolver's infrastructure cache does: `ServerMemory`), holds a
keep-alive connection to
the first address that answers, and sends paced GETs, writing one JSON line per request.
Connections are recycled after `max_connection_age` seconds, as clients behind real load
balancers are, so traffic can return to a recovered region. Modes:
  noretry - one attempt per request, at the first address of the DNS answer;
  retry   - up to `attempts` tries per request, each on a new connection to the next address of
            the answer (what a client with retries and `max_answers` fallback does).

Stdlib only.
"""

import http.client
import json
import random
import signal
import socket
import struct
import sys
import threading
import time

STOP = threading.Event()


def resolve_static(spec, client_region):
    """Today's DNS step: a static answer per client region (its own region's ingress first,
    then the nearest others). This is where the GeoDNS query goes once each region's Meridian
    has a `dns:` listener: see `resolve_geodns`."""
    return list(spec["static_answers"][client_region])


def dns_query_a(server, name, source_ip, timeout, ttls=None):
    """An A query for `name` to `server` (ip, port) over UDP, from `source_ip` (so a GeoDNS
    server that steers by the resolver's address sees this client): the addresses answered,
    in order. The equivalent of `dig @server name A +short`. Each record's TTL is appended to
    `ttls` when given."""
    query_id = random.randrange(1 << 16)
    header = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = header + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source_ip, 0))
        sock.settimeout(timeout)
        sock.sendto(packet, server)
        data, _ = sock.recvfrom(4096)
    try:
        return parse_a_answer(data, query_id, ttls)
    except (IndexError, struct.error, OSError) as e:
        raise ValueError(f"malformed DNS answer: {e}") from e


def parse_a_answer(data, query_id, ttls=None):
    (answer_id, flags, qd, an, _ns, _ar) = struct.unpack(">HHHHHH", data[:12])
    if answer_id != query_id or flags & 0x000F != 0:
        return []
    offset = 12
    for _ in range(qd):
        offset = skip_name(data, offset) + 4
    addresses = []
    for _ in range(an):
        offset = skip_name(data, offset)
        rtype, _rclass, ttl, length = struct.unpack(">HHIH", data[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(data[offset : offset + 4]))
            if ttls is not None:
                ttls.append(ttl)
        offset += length
    return addresses


def skip_name(data, offset):
    for _ in range(128):
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + length
    raise ValueError("name too long")


class ServerMemory:
    """Name servers that timed out, asked last until `ttl` seconds have passed (0: never
    remembered). A recursive resolver does this: unbound keeps each server's timeouts in its
    infrastructure cache for `infra-host-ttl` (900 s by default) and stops choosing a server
    that does not answer; BIND prefers the servers with the lowest smoothed round-trip time.
    Without it, every DNS step while a region is down would first wait out that region's dead
    name server."""

    def __init__(self, ttl, clock=time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self.down_until = {}

    def order(self, servers):
        """`servers` with the remembered ones moved last, each group in its given order."""
        now = self.clock()
        down = [s for s in servers if self.down_until.get(tuple(s), 0.0) > now]
        return [s for s in servers if s not in down] + down

    def timed_out(self, server):
        if self.ttl > 0:
            self.down_until[tuple(server)] = self.clock() + self.ttl

    def answered(self, server):
        self.down_until.pop(tuple(server), None)


def resolve_geodns(spec, client_region, source_ip, ttls=None, memory=None):
    """The GeoDNS step (`--dns geodns`): ask the regions' DNS listeners (`<ingress>:53`, own
    region first, as a stub resolver walks its name servers) for the service name's A records.
    With `memory` (a ServerMemory), servers that timed out lately are asked last."""
    servers = spec["dns_servers"][client_region]
    if memory is not None:
        servers = memory.order(servers)
    for host, port in servers:
        try:
            answer = dns_query_a((host, port), spec["name"], source_ip,
                                 timeout=spec.get("dns_timeout", 1.0), ttls=ttls)
        except TimeoutError:
            if memory is not None:
                memory.timed_out((host, port))
            continue
        except (OSError, ValueError, struct.error):
            continue
        if memory is not None:
            memory.answered((host, port))
        if answer:
            return answer
    return []


def resolve(spec, client_region, source_ip, ttls=None, memory=None):
    if spec["dns"] == "geodns":
        return resolve_geodns(spec, client_region, source_ip, ttls, memory)
    return resolve_static(spec, client_region)


class Worker:
    def __init__(self, spec, worker, out, lock):
        self.spec = spec
        region, source_ip, mode = worker["region"], worker["source"], worker["mode"]
        # A fixed answer instead of the DNS step (the smoke test's cross-region probe).
        self.answers = worker.get("answers")
        self.max_requests = worker.get("max_requests")
        self.headers = {"Host": spec["name"], **worker.get("headers", {})}
        self.region = region
        self.source_ip = source_ip
        self.mode = mode
        self.out = out
        self.lock = lock
        self.conn = None
        self.conn_since = 0.0
        self.conn_address = ""
        # The DNS answer and when its TTL runs out (a caching stub resolver's view).
        self.cached = []
        self.cached_until = 0.0
        # The name servers that timed out (each user has its own resolver here).
        self.servers = ServerMemory(spec.get("dns_down_ttl", 0.0))

    def lookup(self):
        """The DNS answer: the cached one while its TTL lasts, else a new query. Returns
        (answer, whether a query was made)."""
        if self.answers:
            return self.answers, False
        now = time.monotonic()
        if self.cached and now < self.cached_until:
            return self.cached, False
        ttls = []
        answer = resolve(self.spec, self.region, self.source_ip, ttls, self.servers)
        if answer and ttls:
            self.cached, self.cached_until = answer, time.monotonic() + min(ttls)
        return answer, True

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def connect(self, address):
        self.close()
        self.conn = http.client.HTTPConnection(
            address, 80, timeout=self.spec["timeout"], source_address=(self.source_ip, 0)
        )
        self.conn.connect()
        self.conn_since = time.monotonic()
        self.conn_address = address

    def attempt(self, address):
        """One request; a new connection when `address` is given. (status, headers) or raises."""
        if address is not None:
            self.connect(address)
        self.conn.request("GET", "/", headers=self.headers)
        response = self.conn.getresponse()
        response.read()
        return response.status, response

    def one_request(self):
        started_wall = time.time()
        started = time.monotonic()
        tries = self.spec["attempts"] if self.mode == "retry" else 1
        answer = None
        error = ""
        status = 0
        served = meridian = ""
        resolved = None
        for number in range(tries):
            address = None
            aged = time.monotonic() - self.conn_since > self.spec["max_connection_age"]
            if self.conn is None or aged or number > 0:
                if answer is None:
                    answer, queried = self.lookup()
                    if queried:
                        resolved = answer
                if not answer:
                    error = "no DNS answer"
                    break
                address = answer[min(number, len(answer) - 1)]
            try:
                status, response = self.attempt(address)
            except (OSError, http.client.HTTPException) as e:
                self.close()
                error = type(e).__name__
                status = 0
                continue
            served = response.getheader("x-backend-region", "")
            meridian = response.getheader("x-meridian-region", "")
            if status < 500:
                error = ""
                break
            error = f"status {status}"
            self.close()
        record = {
            "t": started_wall,
            "ms": (time.monotonic() - started) * 1000.0,
            "client": self.region,
            "mode": self.mode,
            "ok": error == "" and 200 <= status < 500,
            "status": status,
            "served": served,
            "meridian": meridian,
            "error": error,
            "direct": bool(self.answers),
            # A new DNS answer taken in this request (else none), and the address connected to.
            "resolved": resolved,
            "address": self.conn_address,
        }
        with self.lock:
            self.out.write(json.dumps(record) + "\n")

    def run(self):
        interval = 1.0 / self.spec["rate"]
        deadline = time.monotonic() + self.spec["duration"]
        next_at = time.monotonic() + random.uniform(0, interval)
        # Bounded: at most rate x duration requests (+1), or max_requests, then stop.
        limit = int(self.spec["rate"] * self.spec["duration"]) + 1
        if self.max_requests is not None:
            limit = min(limit, self.max_requests)
        for _ in range(limit):
            if STOP.is_set() or time.monotonic() >= deadline:
                break
            wait = next_at - time.monotonic()
            if wait > 0 and STOP.wait(wait):
                break
            next_at = max(next_at + interval, time.monotonic())
            self.one_request()
        self.close()


def main(spec):
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.set())
    lock = threading.Lock()
    with open(spec["out"], "a", buffering=1) as out:
        threads = [
            threading.Thread(
                target=Worker(spec, w, out, lock).run,
                daemon=True,
            )
            for w in spec["workers"]
        ]
        for thread in threads:
            thread.start()
        print("clients running", flush=True)
        for thread in threads:
            thread.join(spec["duration"] + 30)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
