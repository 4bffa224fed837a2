"""The lab's delay relay: a TCP (and UDP, for DNS) proxy that holds every segment for the
link's one-way delay, with jitter, in both directions, and a new TCP connection's first bytes
for the handshake's round trip as well.

The kernels the lab runs on have no `netem` qdisc, so the wide-area delay between regions is
added here, in user space, on each region's ingress address. The delay depends on where the
peer is: the relay maps the connecting address to a region (client ranges from the demo GeoIP
data, the other regions' lab addresses) and uses the lab's delay matrix for that pair.

Started by run.py inside a region's namespace as `python3 relay.py '<json>'`; stdlib only.
"""

import asyncio
import ipaddress
import json
import random
import signal
import socket
import struct
import sys
import time


class Link:
    """One-way delay for a peer address: `delays` maps peer region -> milliseconds."""

    def __init__(self, spec):
        self.prefixes = [
            (ipaddress.ip_network(cidr), region) for cidr, region in spec["sources"].items()
        ]
        self.delays = spec["delays_ms"]
        self.jitter = spec["jitter"]
        self.default_ms = spec["default_ms"]

    def delay_of(self, peer_ip):
        address = ipaddress.ip_address(peer_ip)
        for network, region in self.prefixes:
            if address in network:
                return self.delays.get(region, self.default_ms) / 1000.0
        return self.default_ms / 1000.0

    def sample(self, base):
        # Jitter: uniform +-(jitter x delay), never below zero.
        return max(0.0, base * (1.0 + random.uniform(-self.jitter, self.jitter)))


async def pump(reader, writer, link, base, first=b"", not_before=0.0):
    """Copy reader -> writer, each chunk sent when its own delay has passed, in order. A chunk
    read before `not_before` (monotonic) counts as sent then: the handshake's round trip."""
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, chunk = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if chunk is None:
                break
            writer.write(chunk)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(sender())
    last_due = 0.0
    try:
        if first:
            writer.write(first)
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            # Keep segments in order: a segment is never due before the one before it.
            sent = max(time.monotonic(), not_before)
            last_due = max(sent + link.sample(base), last_due)
            queue.put_nowait((last_due, chunk))
    except (ConnectionError, OSError):
        pass
    # The close (FIN or RST) is a segment too: it arrives one delay after it was sent.
    sent = max(time.monotonic(), not_before)
    queue.put_nowait((max(sent + link.sample(base), last_due), None))
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def handle(client_reader, client_writer, link, target, proxy_protocol):
    # The kernel completed the client's handshake at once; on the link it takes a round trip
    # (SYN there, SYN-ACK back), and the client sends nothing before that. So nothing from the
    # client counts as sent before then, and its first bytes reach the server a one-way delay
    # later: 3 x one-way after the client began connecting, as on a real link.
    accepted = time.monotonic()
    peer = client_writer.get_extra_info("peername")
    local = client_writer.get_extra_info("sockname")
    base = link.delay_of(peer[0])
    handshake_done = accepted + link.sample(base) + link.sample(base)
    try:
        # Local inside the region: the relay's own connect costs no wide-area delay.
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
    except OSError:
        # Refused: on the link the client's SYN is answered by a RST a round trip later.
        await asyncio.sleep(max(0.0, handshake_done - time.monotonic()))
        sock = client_writer.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        client_writer.close()
        return
    header = b""
    if proxy_protocol:
        # PROXY v1: the region's Meridian sees the real client address (and so its location).
        header = f"PROXY TCP4 {peer[0]} {local[0]} {peer[1]} {local[1]}\r\n".encode()
    # The server answers what the client sent, which is held above, so its answers need no
    # hold of their own; only what it sends unasked (a close) waits for the client's ACK to
    # have reached it, one more one-way after the handshake's round trip.
    server_ready = handshake_done + link.sample(base)
    await asyncio.gather(
        pump(client_reader, upstream_writer, link, base, header, handshake_done),
        pump(upstream_reader, client_writer, link, base, not_before=server_ready),
    )


def with_client_subnet(query, client_ip):
    """`query` with an EDNS Client Subnet option (RFC 7871) naming the client's /24, as a
    public resolver sends on its client's behalf: the query goes on from the relay's own
    address, so this is how the DNS listener learns where the client is. A query that already
    has additional records (its own OPT) goes on unchanged."""
    if len(query) < 12 or query[10:12] != b"\0\0":
        return query
    family_prefix = struct.pack(">HBB", 1, 24, 0)
    option = family_prefix + socket.inet_aton(client_ip)[:3]
    rdata = struct.pack(">HH", 8, len(option)) + option
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, len(rdata)) + rdata
    return query[:10] + b"\0\1" + query[12:] + opt


class UdpRelay(asyncio.DatagramProtocol):
    """DNS: each query held for the delay, sent on from a socket of its own (with the client's
    subnet when `client_subnet`), the answer held for the delay again on its way back."""

    def __init__(self, link, target, client_subnet=False):
        self.link = link
        self.target = target
        self.client_subnet = client_subnet
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        asyncio.get_running_loop().create_task(self.forward(data, addr))

    async def forward(self, data, addr):
        base = self.link.delay_of(addr[0])
        if self.client_subnet:
            data = with_client_subnet(data, addr[0])
        await asyncio.sleep(self.link.sample(base))
        loop = asyncio.get_running_loop()
        answer = loop.create_future()

        class Reply(asyncio.DatagramProtocol):
            def datagram_received(self, reply, _addr):
                if not answer.done():
                    answer.set_result(reply)

        transport, _ = await loop.create_datagram_endpoint(Reply, remote_addr=self.target)
        try:
            transport.sendto(data)
            reply = await asyncio.wait_for(answer, timeout=2.0)
        except (asyncio.TimeoutError, OSError):
            return
        finally:
            transport.close()
        await asyncio.sleep(self.link.sample(base))
        self.transport.sendto(reply, addr)


async def main(spec):
    link = Link(spec)
    servers = []
    for tcp in spec.get("tcp", []):
        listen = (tcp["listen"][0], tcp["listen"][1])
        target = (tcp["target"][0], tcp["target"][1])
        proxy = tcp.get("proxy_protocol", False)
        servers.append(
            await asyncio.start_server(
                lambda r, w, t=target, p=proxy: handle(r, w, link, t, p),
                *listen,
                reuse_address=True,
            )
        )
    loop = asyncio.get_running_loop()
    for udp in spec.get("udp", []):
        await loop.create_datagram_endpoint(
            lambda u=udp: UdpRelay(link, (u["target"][0], u["target"][1]),
                                   u.get("client_subnet", False)),
            local_addr=(udp["listen"][0], udp["listen"][1]),
        )
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print("relay ready", flush=True)
    await stop
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
