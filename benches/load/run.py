#!/usr/bin/env python3
"""Side-by-side load harness: the same nginx backend direct, through Meridian, nginx and HAProxy.

    python3 benches/load/run.py            # full run (about 35 minutes), writes benches/load/results.md
    python3 benches/load/run.py --quick    # 1 repetition of 3 s, for trying it out
    python3 benches/load/run.py --pgo      # measure the profile-guided build (benches/pgo.py)
    python3 benches/load/run.py --memory   # only the idle-connection memory table (about a minute)

Pinning: the load generator alone on CPU 0; proxy and backend on CPU 1. Each proxy runs one
worker (Meridian: --worker-threads 0, a tokio current_thread runtime). Proxy CPU per request is
(utime + stime) from /proc/PID/stat divided by the requests served. A second nginx
(NGINX_HEADERS) does Meridian's per-request header work, for reference. Not part of `cargo test`.
"""
import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BODY = "x" * 99 + "\n"  # 100 bytes
PORTS = {"backend": 18000, "meridian": 18080, "nginx": 18081, "haproxy": 18082, "nginx-headers": 18083,
         "meridian-h2c": 18090, "nginx-h2c": 18091, "meridian-h2": 18443, "nginx-h2": 18444}
IDLE_CONNECTIONS = 10000
H2_RATE = 5000  # HTTP/2 open-loop latency is measured at this rate only
# HAProxy refuses to start with a maxconn whose descriptors (2 per connection) pass the
# process limit, which cannot be raised here (20,000).
HAPROXY_MAX_IDLE = 9900
LOADGEN_CPU, SERVER_CPU = "0", "1"
# The harness pins every process (above); benches/pgo.py's training turns this off, so it
# also runs where CPU 1 may not be there (a container build limited to one CPU).
PIN = True


def pinned(cpu):
    """The `taskset` prefix that puts a command on `cpu`, or none when PIN is off."""
    return ["taskset", "-c", cpu] if PIN else []


# A second nginx reference that does per request what Meridian does besides proxying: the
# forwarding headers, a request id, the loop guard and the region response header. The
# targets are against plain nginx; this row shows what the extra work costs nginx.
NGINX_HEADERS = ("proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $http_host; "
                 "proxy_set_header X-Request-Id $request_id; proxy_set_header X-Meridian-Visited eu-west-1; "
                 "proxy_set_header Host $http_host; add_header x-meridian-region eu-west-1; "
                 "add_header x-request-id $request_id;")
LABELS = {"direct": "backend direct", "nginx-headers": "nginx, Meridian's headers"}


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


# The harness's tools: (command, Debian package that has it).
HARNESS_TOOLS = [("nginx", "nginx-light"), ("haproxy", "haproxy"), ("wrk", "wrk"), ("h2load", "nghttp2-client"),
                 ("openssl", "openssl"), ("valgrind", "valgrind"), ("taskset", "util-linux")]


def ensure_tools(tools=HARNESS_TOOLS, oha=True):
    """Installs the missing ones of `tools` with apt-get, and oha with cargo when `oha`."""
    missing = [pkg for tool, pkg in tools if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"installing {missing} with apt-get", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if oha and shutil.which("oha") is None and not (Path.home() / ".cargo/bin/oha").exists():
        print("installing oha with cargo", flush=True)
        subprocess.run(["cargo", "install", "oha", "--locked"], check=True)


def oha_bin():
    return shutil.which("oha") or str(Path.home() / ".cargo/bin/oha")


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def haproxy_bin():
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_model():
    """The processor's name: the figures move with it (the kernel's cost per system call and
    context switch above all), so each table says which one it was measured on."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "processor unknown"


def busy_fraction(interval=0.5):
    """CPU used by everything on the machine, in cores, over `interval`."""
    def read():
        parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = list(map(int, parts))
        idle = values[3] + values[4]
        return sum(values), idle
    t1, i1 = read()
    time.sleep(interval)
    t2, i2 = read()
    total, idle = t2 - t1, i2 - i1
    cores = os.cpu_count() or 1
    return cores * (total - idle) / max(total, 1)


def wait_quiet(limit=0.15, tries=40):
    for _ in range(tries):
        if busy_fraction() < limit:
            return True
    return False


class Processes:
    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.procs = {}

    def start(self, name, cmd, port, env=None):
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen([*pinned(SERVER_CPU), *cmd], stdout=log, stderr=log,
                                env={**os.environ, **(env or {})})
        self.procs[name] = proc
        wait_port(port)
        return proc

    def stop_all(self):
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def nginx_conf(tmp, role):
    """role: "backend", "proxy" (the nginx reference) or "proxy-headers" (NGINX_HEADERS)."""
    port = PORTS[{"backend": "backend", "proxy": "nginx", "proxy-headers": "nginx-headers"}[role]]
    h2_servers = ""
    if role == "backend":
        location = f'return 200 "{BODY.strip()}\\n";'
        upstream = ""
    else:
        upstream = f"upstream backend {{ server 127.0.0.1:{PORTS['backend']}; keepalive 128; }}"
        location = ("proxy_pass http://backend; proxy_http_version 1.1; "
                    "proxy_set_header Connection \"\"; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
    if role == "proxy-headers":
        location += " " + NGINX_HEADERS
    if role == "proxy":
        cert, key = certificate(tmp)
        h2_servers = (f"server {{ listen 127.0.0.1:{PORTS['nginx-h2c']} http2; location / {{ {location} }} }}\n"
                      f"  server {{ listen 127.0.0.1:{PORTS['nginx-h2']} ssl http2; ssl_certificate {cert}; "
                      f"ssl_certificate_key {key}; ssl_protocols TLSv1.3; location / {{ {location} }} }}")
    conf = Path(tmp) / f"nginx-{role}.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
master_process off;
error_log {tmp}/nginx-{role}-error.log;
pid {tmp}/nginx-{role}.pid;
events {{ worker_connections 12000; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body-{role};
  proxy_temp_path {tmp}/proxy-{role};
  fastcgi_temp_path {tmp}/fcgi-{role};
  uwsgi_temp_path {tmp}/uwsgi-{role};
  scgi_temp_path {tmp}/scgi-{role};
  keepalive_requests 1000000;
  {upstream}
  server {{ listen 127.0.0.1:{port}; location / {{ {location} }} }}
  {h2_servers}
}}
""")
    return conf


def haproxy_conf(tmp, maxconn=9990):
    conf = Path(tmp) / f"haproxy-{maxconn}.cfg"
    conf.write_text(f"""
global
  nbthread 1
  # HAProxy reserves two descriptors per connection (2 x maxconn + 14 must fit the process
  # limit, 20,000 here), so it takes at most 9,990 connections: see HAPROXY_MAX_IDLE.
  maxconn {maxconn}
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']}
  option forwardfor
  default_backend be
backend be
  server s1 127.0.0.1:{PORTS['backend']}
""")
    return conf


def certificate(tmp):
    """A self-signed P-256 certificate for 127.0.0.1, made once per run."""
    cert, key = Path(tmp) / "bench.crt", Path(tmp) / "bench.key"
    if not cert.exists():
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2",
           "-keyout", str(key), "-out", str(cert))
    return cert, key


def meridian_conf(tmp):
    conf = Path(tmp) / "meridian.yaml"
    cert, key = certificate(tmp)
    conf.write_text(f"""
local_region: eu-west-1
listeners:
  - {{ name: http, bind: "127.0.0.1:{PORTS['meridian']}" }}
  - {{ name: h2c, bind: "127.0.0.1:{PORTS['meridian-h2c']}" }}
  - {{ name: h2, bind: "127.0.0.1:{PORTS['meridian-h2']}", tls: {{ certificates: [{{ cert: {cert}, key: {key} }}] }} }}
admin: {{ bind: null }}
access_log: {{ enabled: false }}
geo:
  database: {ROOT}/config/geoip/demo-city.mmdb
  trusted_proxies: ["127.0.0.1/32"]
regions:
  us-east-1:      {{ lat: 38.9, lon: -77.4 }}
  eu-west-1:      {{ lat: 53.3, lon: -6.3 }}
  ap-southeast-1: {{ lat: 1.35, lon: 103.8 }}
clusters:
  bench:
    endpoints: {{ eu-west-1: ["127.0.0.1:{PORTS['backend']}"] }}
    outlier_detection: {{ enabled: false }}
routes:
  - {{ name: bench, hosts: ["*"], cluster: bench }}
""")
    return conf


def difference_interval(a, b, resamples=2000):
    """median(a) - median(b), and the 5th and 95th percentiles of that difference when the runs
    of each side are resampled with replacement (a bootstrap; seeded, so a table is repeatable)."""
    rng = random.Random(0)
    diffs = sorted(statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
                   for _ in range(resamples))
    return statistics.median(a) - statistics.median(b), diffs[resamples // 20], diffs[resamples - 1 - resamples // 20]


def rotated(order, rep):
    """`order` started at position `rep` (wrapping), so each target takes each place in turn."""
    k = rep % len(order)
    return order[k:] + order[:k]


def added(got, base):
    """Latency table cells: p50, p90 and p99 added over `base`, µs."""
    return " | ".join(f"{got[k] - base[k]:+.0f}" for k in ("p50", "p90", "p99"))


def wrk(port, seconds, connections=50, script=None):
    """Closed loop: wrk on CPU 0. The client address (X-Forwarded-For) makes Meridian do the
    whole geo path: trusted peer, XFF parse, GeoIP lookup, region ranking. `script`: a wrk Lua
    script (see `post_script`)."""
    lua = ["-s", str(script)] if script else []
    out = sh(*pinned(LOADGEN_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *lua,
             "-H", "X-Forwarded-For: 198.51.100.7", f"http://127.0.0.1:{port}/").stdout
    requests = 0
    for line in out.splitlines():
        if "requests in" in line:
            requests = int(line.strip().split()[0])
        if line.strip().startswith("Non-2xx"):
            raise RuntimeError(f"non-2xx answers:\n{out}")
    return requests


POST_BYTES = 512


def post_script(tmp):
    """A wrk script that makes every request a POST with a POST_BYTES-byte JSON body."""
    path = Path(tmp) / "post.lua"
    path.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {POST_BYTES})\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
    return path


def closed_loop(order, reps, warm, seconds, ports, pids, script=None, label=""):
    """`reps` rotated rounds of wrk against each target, re-run when disturbed: per target the
    proxy's CPU µs per request and req/s."""
    results = {name: {"cpu_us": [], "rps": []} for name in order}
    for rep in range(reps):
        for name in rotated(order, rep):
            for attempt in range(3):
                if not wait_quiet():
                    print("  machine not quiet; measuring anyway", flush=True)
                wrk(ports[name], warm, script=script)
                before = cpu_ticks(pids[name])
                busy_before = busy_fraction(0.1)
                requests = wrk(ports[name], seconds, script=script)
                used = (cpu_ticks(pids[name]) - before) / CLK_TCK
                if requests > 0 and busy_before < 1.5:
                    break
                print(f"  {name}: disturbed run, again", flush=True)
            results[name]["cpu_us"].append(used / requests * 1e6)
            results[name]["rps"].append(requests / seconds)
            print(f"rep {rep + 1} {name}{label}: {requests / seconds:.0f} req/s, "
                  f"{used / requests * 1e6:.1f} µs CPU/req", flush=True)
    return results


def oha(port, rate, seconds, protocol="http/1.1"):
    """Open loop at `rate` requests/s over 50 connections. protocol: "http/1.1", "h2c" (HTTP/2
    with prior knowledge) or "h2" (HTTP/2 over TLS, the self-signed certificate accepted)."""
    h2 = ["--http2"] if protocol != "http/1.1" else []
    tls = ["--insecure"] if protocol == "h2" else []
    scheme = "https" if protocol == "h2" else "http"
    out = sh(*pinned(LOADGEN_CPU), oha_bin(), "--no-tui", "--output-format", "json", "-z", f"{seconds}s",
             "-q", str(rate), "--latency-correction", "-c", "50", *h2, *tls, "-H", "X-Forwarded-For: 198.51.100.7",
             f"{scheme}://127.0.0.1:{port}/").stdout
    data = json.loads(out)
    pct = data["latencyPercentiles"]
    return {k: pct[k] * 1e6 for k in ("p50", "p90", "p99")}  # µs


def h2load(port, tls, seconds):
    """HTTP/2 closed loop: h2load on CPU 0, 50 connections with 10 streams each, prior knowledge
    (h2c) or ALPN over TLS 1.3. Returns (requests, mean request time in µs)."""
    scheme = "https" if tls else "http"
    out = sh(*pinned(LOADGEN_CPU), "h2load", "-t1", "-c50", "-m10", "-D", str(seconds),
             "--warm-up-time=0", "-H", "x-forwarded-for: 198.51.100.7", f"{scheme}://127.0.0.1:{port}/").stdout
    requests, mean = 0, 0.0
    for line in out.splitlines():
        words = line.split()
        if line.startswith("requests:"):
            # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
            requests = int(words[7])
            if int(words[9]) or int(words[11]):
                raise RuntimeError(f"failed requests:\n{out}")
        if line.startswith("status codes:") and (int(words[6]) or int(words[8])):
            # status codes: N 2xx, N 3xx, N 4xx, N 5xx
            raise RuntimeError(f"4xx/5xx answers:\n{out}")
        if line.startswith("time for request:"):
            mean = duration_us(words[5])
    return requests, mean


def duration_us(text):
    """h2load's durations: 812us, 1.23ms, 2.01s."""
    for suffix, scale in (("us", 1.0), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * scale
    raise ValueError(f"not a duration: {text}")


def instructions_per_request(tmp, name, cmd, port, stop):
    """User-space instructions per proxied request, counted by callgrind: the proxy runs
    under valgrind twice (2,000 and 12,000 requests from oha, 10 connections) and the
    difference is divided by 10,000, so start-up and shutdown cancel out. Unlike times,
    the count repeats to within a fraction of a percent whatever else the machine does."""
    totals = []
    for n in (2000, 12000):
        out = Path(tmp) / f"callgrind.{name}.{n}"
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "MERIDIAN_LOG": "error"})
        try:
            wait_port(port, timeout=60)
            sh(oha_bin(), "--no-tui", "-n", str(n), "-c", "10", "-H", "X-Forwarded-For: 198.51.100.7",
               f"http://127.0.0.1:{port}/")
        finally:
            proc.send_signal(stop)
            proc.wait(timeout=120)
        text = out.read_text()
        line = next(l for l in text.splitlines() if l.startswith(("summary:", "totals:")))
        totals.append(int(line.split()[1]))
    return (totals[1] - totals[0]) / 10000


async def idle_connections(port, count, tls=False):
    """`count` keep-alive connections after one HTTP/1.1 request each; with `tls`, over TLS 1.3
    (ALPN http/1.1, the self-signed certificate accepted)."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n"
    conns = []
    sem = asyncio.Semaphore(500)
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["http/1.1"])

    async def one():
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            conns.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    return conns


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS, H2_PING, H2_GOAWAY = 0, 1, 4, 6, 7
H2_END_STREAM, H2_ACK = 0x1, 0x1


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def h2_get(tls):
    """HPACK for GET / on `bench` with the trusted X-Forwarded-For: static-table fields and
    literals without indexing, so no dynamic table is needed."""
    def literal(value):
        return bytes([len(value)]) + value
    block = (b"\x82\x84" + (b"\x87" if tls else b"\x86") + b"\x01" + literal(b"bench")
             + b"\x00" + literal(b"x-forwarded-for") + literal(b"198.51.100.7"))
    return h2_frame(H2_HEADERS, H2_END_STREAM | 0x4, 1, block)


async def h2_read_frame(reader, writer):
    """One frame (kind, flags, stream); settings and pings are answered on the way."""
    head = await reader.readexactly(9)
    length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    payload = await reader.readexactly(length)
    if kind == H2_SETTINGS and not flags & H2_ACK:
        writer.write(h2_frame(H2_SETTINGS, H2_ACK, 0))
    elif kind == H2_PING and not flags & H2_ACK:
        writer.write(h2_frame(H2_PING, H2_ACK, 0, payload))
    return kind, flags, stream


async def h2_answer_pings(reader, writer):
    """Keep an idle HTTP/2 connection alive (the server pings idle clients) until it closes."""
    try:
        while True:
            await h2_read_frame(reader, writer)
    except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
        pass


async def idle_h2_connections(port, count, tls=False):
    """`count` HTTP/2 connections after one request each (stream 1), pings answered while
    they stay open; prior knowledge, or TLS 1.3 with ALPN h2."""
    conns = []
    sem = asyncio.Semaphore(500)
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["h2"])

    async def one():
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.write(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0) + h2_get(tls))
            await writer.drain()
            while True:
                kind, flags, stream = await h2_read_frame(reader, writer)
                if kind == H2_GOAWAY:
                    raise RuntimeError("GOAWAY before the answer")
                if kind in (H2_HEADERS, H2_DATA) and stream == 1 and flags & H2_END_STREAM:
                    break
            await writer.drain()
            # The task is kept with the connection; closing the writer ends it.
            writer.pinger = asyncio.ensure_future(h2_answer_pings(reader, writer))
            conns.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    return conns


async def idle_phase(port, pid, count, tls=False, h2=False):
    """RSS before, while `count` keep-alive connections sit idle, and after they closed."""
    before = rss_kb(pid)
    conns = await (idle_h2_connections if h2 else idle_connections)(port, count, tls)
    await asyncio.sleep(1)
    during = rss_kb(pid)
    for w in conns:
        w.close()
    await asyncio.sleep(2)
    for w in conns:
        if hasattr(w, "pinger"):
            w.pinger.cancel()
    return before, during, rss_kb(pid)


# The idle-connection kinds of the memory table: (label, port key suffix, tls, h2). The
# TLS and HTTP/2 ones go to the proxies' HTTP/2 listeners (HTTP/1.1 over TLS by ALPN there).
IDLE_KINDS = [("", "", False, False), (", h2c", "-h2c", False, True),
              (", TLS 1.3", "-h2", True, False), (", h2 + TLS 1.3", "-h2", True, True)]


def memory_phase(names, ports, pids, idle_count):
    """RSS (before, with the idle connections, after they closed) per (target, kind): every
    kind for Meridian and nginx, plain HTTP/1.1 only for the others."""
    idle = {}
    for label, suffix, tls, h2 in IDLE_KINDS:
        for name in names:
            if suffix and name not in ("meridian", "nginx"):
                continue
            count = min(idle_count, HAPROXY_MAX_IDLE) if name == "haproxy" else idle_count
            port = PORTS[f"{name}{suffix}"] if suffix else ports[name]
            got = asyncio.run(idle_phase(port, pids[name], count, tls=tls, h2=h2))
            idle[(name, label)] = (count, got)
            print(f"{name}{label}: RSS (idle, with {count} connections, after): {got} KB", flush=True)
    return idle


def memory_lines(idle, idle_rss):
    """The memory table; the first row of each target shows its RSS before any load."""
    lines = ["Memory: RSS idle, per idle keep-alive connection (one request each, then left open), and two "
             "seconds after they closed. The rows after a target's first (HTTP/2 with prior knowledge, then "
             "HTTP/1.1 and HTTP/2 by ALPN over TLS 1.3 on the HTTP/2 listeners) start from the RSS the runs "
             "before them left:", "",
             "| target | idle RSS | idle connections | per connection | after close |", "|---|---|---|---|---|"]
    for (name, label), (count, (before, during, after)) in idle.items():
        start = idle_rss[name] if not label else before
        lines.append(f"| {name}{label} | {start / 1024:.1f} MB | {count} | "
                     f"{(during - before) / count:.2f} KB | {after / 1024:.1f} MB |")
    return lines


def memory_only(args, meridian):
    """The memory table alone: the nginx backend, Meridian and the nginx reference (no HAProxy,
    no load before it), printed."""
    ensure_tools([("nginx", "nginx-light"), ("openssl", "openssl")], oha=False)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle_count = min(args.idle, hard - 1000)
    tmp = tempfile.mkdtemp(prefix="meridian-memory-")
    procs = Processes(tmp)
    names = ("meridian", "nginx")
    try:
        procs.start("backend", [nginx_bin(), "-c", str(nginx_conf(tmp, "backend"))], PORTS["backend"])
        procs.start("meridian", [str(meridian), "run", "-c", str(meridian_conf(tmp)), "--worker-threads", "0"],
                    PORTS["meridian"], env={"MERIDIAN_LOG": "error"})
        procs.start("nginx", [nginx_bin(), "-c", str(nginx_conf(tmp, "proxy"))], PORTS["nginx"])
        for port in ("meridian-h2c", "meridian-h2", "nginx-h2c", "nginx-h2"):
            wait_port(PORTS[port])
        pids = {name: procs.procs[name].pid for name in names}
        ports = {name: PORTS[name] for name in names}
        idle_rss = {name: rss_kb(pids[name]) for name in names}
        idle = memory_phase(names, ports, pids, idle_count)
    finally:
        procs.stop_all()
    print("\n" + "\n".join(memory_lines(idle, idle_rss)))


def median_range(values):
    return statistics.median(values), min(values), max(values)


def fmt(values, unit="", digits=1):
    m, lo, hi = median_range(values)
    return f"{m:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benches/load/results.md"))
    ap.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    ap.add_argument("--pgo", action="store_true",
                    help="measure the profile-guided build made by benches/pgo.py instead of cargo's")
    ap.add_argument("--memory", action="store_true", help="only the idle-connection memory table, printed")
    ap.add_argument("--idle", type=int, default=IDLE_CONNECTIONS, help="idle connections per row (--memory)")
    ap.add_argument("--binary", help="the meridian binary to measure instead of building one (--memory)")
    args = ap.parse_args()
    if args.memory:
        if args.binary:
            return memory_only(args, Path(args.binary))
        subprocess.run(["cargo", "build", "--release", "--bin", "meridian"], cwd=ROOT, check=True)
        return memory_only(args, ROOT / "target/release/meridian")
    reps, seconds, warm = (1, 3, 1) if args.quick else (3, 10, 2)
    # One 10 s run's p99 moves by 300-600 µs between runs of the same proxy at 15,000 req/s
    # (nothing else busy: no steal, no other process), more than the proxies differ: latency
    # gets more repetitions than the closed-loop figures, and the table shows the spread.
    latency_reps = reps if args.quick else 9
    idle_count = 2000 if args.quick else IDLE_CONNECTIONS
    ensure_tools()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The client side of the idle connections lives in this process, the other side in the
    # proxy's: each needs one descriptor per connection, with room to spare.
    idle_count = min(idle_count, hard - 1000)
    if args.pgo:
        print("building meridian (release, profile-guided)", flush=True)
        subprocess.run([sys.executable, str(ROOT / "benches/pgo.py")], check=True)
        meridian = ROOT / "target/pgo/release/meridian"
    else:
        print("building meridian (release)", flush=True)
        subprocess.run(["cargo", "build", "--release", "--bin", "meridian"], cwd=ROOT, check=True)
        meridian = ROOT / "target/release/meridian"
    build = "profile-guided release build, benches/pgo.py" if args.pgo else "cargo build --release"
    tmp = tempfile.mkdtemp(prefix="meridian-load-")
    procs = Processes(tmp)
    order = ["direct", "meridian", "nginx", "haproxy", "nginx-headers"]
    try:
        procs.start("backend", [nginx_bin(), "-c", str(nginx_conf(tmp, "backend"))], PORTS["backend"])
        instructions = {}
        if not args.no_callgrind:
            for name, cmd, stop in (
                ("meridian", [str(meridian), "run", "-c", str(meridian_conf(tmp)), "--worker-threads", "0"],
                 signal.SIGTERM),
                ("nginx", [nginx_bin(), "-c", str(nginx_conf(tmp, "proxy"))], signal.SIGQUIT),
                ("nginx-headers", [nginx_bin(), "-c", str(nginx_conf(tmp, "proxy-headers"))], signal.SIGQUIT),
                # valgrind keeps a few descriptors for itself: HAProxy's full maxconn would not fit.
                ("haproxy", [haproxy_bin(), "-f", str(haproxy_conf(tmp, maxconn=1000))], signal.SIGTERM),
            ):
                instructions[name] = instructions_per_request(tmp, name, cmd, PORTS[name], stop)
                print(f"{name}: {instructions[name]:.0f} instructions per request (callgrind)", flush=True)
        procs.start("meridian", [str(meridian), "run", "-c", str(meridian_conf(tmp)), "--worker-threads", "0"],
                    PORTS["meridian"], env={"MERIDIAN_LOG": "error"})
        procs.start("nginx", [nginx_bin(), "-c", str(nginx_conf(tmp, "proxy"))], PORTS["nginx"])
        wait_port(PORTS["nginx-h2"])
        wait_port(PORTS["meridian-h2"])
        procs.start("haproxy", [haproxy_bin(), "-f", str(haproxy_conf(tmp))], PORTS["haproxy"])
        procs.start("nginx-headers", [nginx_bin(), "-c", str(nginx_conf(tmp, "proxy-headers"))],
                    PORTS["nginx-headers"])
        pids = {name: procs.procs["backend" if name == "direct" else name].pid for name in order}
        ports = {name: PORTS["backend" if name == "direct" else name] for name in order}
        idle_rss = {name: rss_kb(pids[name]) for name in ("meridian", "nginx", "haproxy")}
        results = closed_loop(order, reps, warm, seconds, ports, pids)
        post_order = ["meridian", "nginx", "haproxy"]
        post = closed_loop(post_order, reps, warm, seconds, ports, pids, script=post_script(tmp), label=" POST")
        # Percentiles of one open-loop run move a lot between runs (p99 most): each target is
        # measured `latency_reps` times, interleaved with the others in a rotated order, and the
        # median of each percentile is reported.
        runs = {}
        for rate in (5000, 15000):
            for rep in range(latency_reps):
                for name in rotated(order, rep):
                    wait_quiet()
                    oha(ports[name], rate, warm)
                    got = oha(ports[name], rate, seconds)
                    runs.setdefault((name, rate), []).append(got)
                    print(f"rep {rep + 1} {name} @ {rate}/s: {got}", flush=True)
        latency = {key: {k: statistics.median(r[k] for r in got) for k in ("p50", "p90", "p99")}
                   for key, got in runs.items()}
        h2 = {(name, tls): {"cpu_us": [], "rps": [], "mean_us": []} for name in ("meridian", "nginx")
              for tls in (False, True)}
        for rep in range(reps):
            for tls in (False, True):
                for name in (("meridian", "nginx") if rep % 2 == 0 else ("nginx", "meridian")):
                    port = PORTS[f"{name}-{'h2' if tls else 'h2c'}"]
                    wait_quiet()
                    h2load(port, tls, warm)
                    before = cpu_ticks(pids[name])
                    requests, mean = h2load(port, tls, seconds)
                    used = (cpu_ticks(pids[name]) - before) / CLK_TCK
                    h2[(name, tls)]["cpu_us"].append(used / requests * 1e6)
                    h2[(name, tls)]["rps"].append(requests / seconds)
                    h2[(name, tls)]["mean_us"].append(mean)
                    print(f"rep {rep + 1} {name} {'h2+TLS' if tls else 'h2c'}: {requests / seconds:.0f} req/s, "
                          f"{used / requests * 1e6:.1f} µs CPU/req, mean request {mean:.0f} µs", flush=True)
        # HTTP/2 open loop at the lower rate, against the same run's HTTP/1.1 direct baseline.
        h2_runs = {}
        for rep in range(reps):
            for protocol in ("h2c", "h2"):
                for name in (("meridian", "nginx") if rep % 2 == 0 else ("nginx", "meridian")):
                    wait_quiet()
                    oha(PORTS[f"{name}-{protocol}"], H2_RATE, warm, protocol)
                    got = oha(PORTS[f"{name}-{protocol}"], H2_RATE, seconds, protocol)
                    h2_runs.setdefault((name, protocol), []).append(got)
                    print(f"rep {rep + 1} {name} {protocol} @ {H2_RATE}/s: {got}", flush=True)
        h2_latency = {key: {k: statistics.median(r[k] for r in got) for k in ("p50", "p90", "p99")}
                      for key, got in h2_runs.items()}
        idle = memory_phase(("meridian", "nginx", "haproxy"), ports, pids, idle_count)
    finally:
        procs.stop_all()

    versions = {
        "nginx": subprocess.run([nginx_bin(), "-v"], capture_output=True, text=True).stderr.strip(),
        "haproxy": subprocess.run([haproxy_bin(), "-v"], capture_output=True, text=True).stdout.splitlines()[0],
        "meridian": subprocess.run([str(meridian), "--version"], capture_output=True, text=True).stdout.strip(),
    }
    nginx_cpu = statistics.median(results["nginx"]["cpu_us"])
    haproxy_cpu = statistics.median(results["haproxy"]["cpu_us"])
    nginx_rps = statistics.median(results["nginx"]["rps"])
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({cpu_model()}, {os.uname().machine}, Linux "
        f"{os.uname().release}); {versions['meridian']} ({build}; current_thread runtime), {versions['nginx']}, "
        f"{versions['haproxy']}. Load generator on CPU 0, proxy and backend (nginx, one worker, 100-byte body) "
        f"on CPU 1; wrk -t1 -c50, {reps} × {seconds} s after {warm} s warm-up, order rotated; medians (min–max). "
        "Every request carries X-Forwarded-For from a trusted peer, so Meridian does the full geo path. "
        "\"nginx, Meridian's headers\" is the nginx reference also sending X-Forwarded-Proto, X-Forwarded-Host, "
        "X-Request-Id, the loop guard and Host upstream and adding x-meridian-region and x-request-id to the "
        "response, as Meridian does; every × column is against plain nginx. Single measurements behind "
        "choices in the code are in [notes.md](notes.md).",
        "",
        "| target | req/s | × nginx | proxy CPU µs/request | × nginx | × HAProxy |",
        "|---|---|---|---|---|---|",
    ]
    for name in order:
        rps = statistics.median(results[name]["rps"])
        cpu = statistics.median(results[name]["cpu_us"])
        if name == "direct":
            lines.append(f"| backend direct | {fmt(results[name]['rps'], '', 0)} | {rps / nginx_rps:.2f} | – | – | – |")
            continue
        lines.append(f"| {LABELS.get(name, name)} | {fmt(results[name]['rps'], '', 0)} | {rps / nginx_rps:.2f} | "
                     f"{fmt(results[name]['cpu_us'])} | {cpu / nginx_cpu:.2f} | {cpu / haproxy_cpu:.2f} |")
    post_nginx_cpu = statistics.median(post["nginx"]["cpu_us"])
    post_haproxy_cpu = statistics.median(post["haproxy"]["cpu_us"])
    post_nginx_rps = statistics.median(post["nginx"]["rps"])
    lines += ["", f"Requests with a body: the same closed loop with every request a POST carrying a {POST_BYTES}-byte "
              "body (Content-Length):", "",
              "| target | req/s | × nginx | proxy CPU µs/request | × nginx | × HAProxy |",
              "|---|---|---|---|---|---|"]
    for name in post_order:
        rps = statistics.median(post[name]["rps"])
        cpu = statistics.median(post[name]["cpu_us"])
        lines.append(f"| {LABELS.get(name, name)} | {fmt(post[name]['rps'], '', 0)} | {rps / post_nginx_rps:.2f} | "
                     f"{fmt(post[name]['cpu_us'])} | {cpu / post_nginx_cpu:.2f} | {cpu / post_haproxy_cpu:.2f} |")
    if instructions:
        lines += ["", "User-space instructions per proxied request (callgrind, 10,000 requests; repeatable to "
                  "a fraction of a percent):", "", "| target | instructions/request | × nginx |", "|---|---|---|"]
        for name in order[1:]:
            lines.append(f"| {LABELS.get(name, name)} | {instructions[name]:,.0f} | "
                         f"{instructions[name] / instructions['nginx']:.2f} |")
    lines += ["", f"Open-loop latency added over direct (oha, latency-corrected; median of {latency_reps} interleaved "
              f"runs of {seconds} s per target and rate, each after {warm} s at the same rate; the backend direct row is the baseline's own "
              f"percentiles; the last column is the p99 of each single run, min–max), µs:", "",
              "| target | rate | p50 | p90 | p99 | p99 of single runs |", "|---|---|---|---|---|---|"]
    for rate in (5000, 15000):
        base = latency[("direct", rate)]
        for name in order:
            spread = [r["p99"] for r in runs[(name, rate)]]
            # The direct row shows its own percentiles, the others what they add to them.
            got = (" | ".join(f"{base[k]:.0f}" for k in ("p50", "p90", "p99")) if name == "direct"
                   else added(latency[(name, rate)], base))
            lines.append(f"| {LABELS.get(name, name)} | {rate}/s | {got} | {min(spread):.0f}–{max(spread):.0f} |")
    lines += ["", "Meridian's added latency minus nginx's (the medians above), with the 90% interval of that "
              "difference over 2,000 resamples of the runs (an interval that spans zero means these runs cannot "
              "tell the two apart), µs:", "", "| rate | p50 | p90 | p99 |", "|---|---|---|---|"]
    for rate in (5000, 15000):
        cells = []
        for k in ("p50", "p90", "p99"):
            diff, low, high = difference_interval([r[k] for r in runs[("meridian", rate)]],
                                                  [r[k] for r in runs[("nginx", rate)]])
            cells.append(f"{diff:+.0f} ({low:+.0f} to {high:+.0f})")
        lines.append(f"| {rate}/s | {' | '.join(cells)} |")
    lines += ["", "HTTP/2 from the client (h2load -t1 -c50 -m10; prior knowledge, or TLS 1.3 with ALPN h2 and a "
              "P-256 certificate); HTTP/1.1 keep-alive to the same backend:", "",
              "| target | protocol | req/s | × nginx | proxy CPU µs/request | × nginx | mean request time µs |",
              "|---|---|---|---|---|---|---|"]
    for tls in (False, True):
        ref = h2[("nginx", tls)]
        for name in ("meridian", "nginx"):
            r = h2[(name, tls)]
            lines.append(f"| {name} | {'h2 + TLS' if tls else 'h2c'} | {fmt(r['rps'], '', 0)} | "
                         f"{statistics.median(r['rps']) / statistics.median(ref['rps']):.2f} | {fmt(r['cpu_us'])} | "
                         f"{statistics.median(r['cpu_us']) / statistics.median(ref['cpu_us']):.2f} | "
                         f"{statistics.median(r['mean_us']):.0f} |")
    base = latency[("direct", H2_RATE)]
    lines += ["", f"HTTP/2 open-loop latency at {H2_RATE}/s (oha --http2, 50 connections, latency-corrected; "
              f"median of {reps} runs, each after {warm} s at the same rate), added over the same run's HTTP/1.1 "
              "direct baseline, µs:", "",
              "| target | protocol | p50 | p90 | p99 |", "|---|---|---|---|---|"]
    for protocol in ("h2c", "h2"):
        for name in ("meridian", "nginx"):
            lines.append(f"| {name} | {'h2 + TLS' if protocol == 'h2' else 'h2c'} | "
                         f"{added(h2_latency[(name, protocol)], base)} |")
    lines += [""] + memory_lines(idle, idle_rss)
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    # The config-size section is measured apart (it says how) and kept from run to run.
    kept = ""
    if out.exists():
        previous = out.read_text()
        at = previous.find("\n## Config size")
        if at >= 0:
            kept = previous[at:]
    out.write_text(text + kept)
    print("\n" + text)


if __name__ == "__main__":
    sys.exit(main())
