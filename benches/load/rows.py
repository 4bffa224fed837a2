#!/usr/bin/env python3
"""Harness rows beside run.py's main table, one mode each; every mode rewrites its own section
of results.md (its `## ` heading to the next) and prints the table.

    python3 benches/load/rows.py --grpc            # h2c and gRPC unary: Meridian, nginx grpc_pass, HAProxy
    python3 benches/load/rows.py --threads         # the default `meridian run` at 1 and 2 cores
    python3 benches/load/rows.py --geo-full        # full GeoLite2-City, a random client per request
    python3 benches/load/rows.py --tls-handshakes  # full and resumed TLS 1.3 handshakes per second
    python3 benches/load/rows.py --h2              # h2c latency at a fixed rate
    python3 benches/load/rows.py --cpu-split       # user and kernel time: plain, profile-guided, nginx

`--binary PATH` measures that build instead of `cargo build --release` (CARGO_TARGET_DIR is
honoured); `--quick` runs one short repetition. The figures that hold on a busy machine are
the proxy's CPU per request ((utime + stime) of its whole process tree from /proc, over the
requests served) and, where a mode has them, callgrind's user-space instructions per request.
Each mode takes under ten minutes. Not part of `cargo test`.
"""
import argparse
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (the main harness's helpers)

ROOT = base.ROOT
CLK_TCK = base.CLK_TCK
RESULTS = ROOT / "benches/load/results.md"


# ---------------------------------------------------------------------------------------------
# Shared helpers


def tree_pids(pid):
    """`pid` and every process below it (nginx's workers under its master)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(stat[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_ticks(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            total += base.cpu_ticks(p)
        except OSError:
            pass
    return total


def write_section(title, lines, out=RESULTS):
    """Replaces the `## title` section of results.md with `lines` (appends it when missing)."""
    text = out.read_text() if out.exists() else ""
    head = f"\n## {title}\n"
    body = head + "\n" + "\n".join(lines) + "\n"
    at = text.find(head)
    if at < 0:
        text = text.rstrip("\n") + "\n" + body
    else:
        end = text.find("\n## ", at + len(head))
        text = text[:at] + body + (text[end:] if end >= 0 else "")
    out.write_text(text)
    print("\n".join(lines))


def meridian_binary(args):
    if args.binary:
        return Path(args.binary)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    print("building meridian (release)", flush=True)
    subprocess.run(["cargo", "build", "--release", "--bin", "meridian"], cwd=ROOT, check=True)
    return target / "release/meridian"


def versions(meridian):
    nginx = subprocess.run([base.nginx_bin(), "-v"], capture_output=True, text=True).stderr.strip()
    haproxy = subprocess.run([base.haproxy_bin(), "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    own = subprocess.run([str(meridian), "--version"], capture_output=True, text=True).stdout.strip()
    return f"{own}, {nginx}, {haproxy.split(' - ')[0]}"


def conditions():
    """Where and under what load a table was measured: the machine is shared."""
    load = os.getloadavg()
    return (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores "
            f"({base.cpu_model()}, Linux {os.uname().release}); load average {load[0]:.1f} / {load[1]:.1f} "
            "(1 / 5 min) when the table was written, from other processes on the machine")


def quiet_enough():
    if not base.wait_quiet(limit=0.3, tries=6):
        print("  machine busy; measuring anyway (CPU per request still holds)", flush=True)


class Procs:
    """Started processes, each with the CPUs it may run on; all stopped on exit."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.procs = {}

    def start(self, name, cmd, ports, cpus="1", env=None, stop=signal.SIGTERM):
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen(["taskset", "-c", cpus, *cmd], stdout=log, stderr=log,
                                env={**os.environ, "MERIDIAN_LOG": "error", **(env or {})})
        proc.stop_signal = stop
        self.procs[name] = proc
        for port in ports:
            try:
                base.wait_port(port, timeout=30)
            except RuntimeError:
                raise RuntimeError(f"{name} did not listen on {port}: {(self.tmp / f'{name}.log').read_text()[-2000:]}")
        return proc

    def stop(self, name):
        proc = self.procs.pop(name)
        proc.send_signal(proc.stop_signal)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)


def nginx_main(tmp, name, workers=1, modules="", events="worker_connections 12000;"):
    """nginx's top of file: `workers` workers (a master above them when more than one)."""
    master = "on" if workers > 1 else "off"
    return f"""{modules}
worker_processes {workers};
daemon off;
master_process {master};
error_log {tmp}/{name}-error.log;
pid {tmp}/{name}.pid;
events {{ {events} }}
"""


def nginx_http_common(tmp, name):
    return (f"access_log off; client_body_temp_path {tmp}/body-{name}; proxy_temp_path {tmp}/proxy-{name}; "
            f"fastcgi_temp_path {tmp}/fcgi-{name}; uwsgi_temp_path {tmp}/uwsgi-{name}; "
            f"scgi_temp_path {tmp}/scgi-{name}; keepalive_requests 1000000;")


def write(tmp, name, text):
    path = Path(tmp) / name
    path.write_text(text)
    return path


MERIDIAN_TOP = """
local_region: eu-west-1
admin: {{ bind: null }}
access_log: {{ enabled: false }}
geo:
  database: {geo}
  trusted_proxies: ["127.0.0.1/32"]
regions:
  us-east-1:      {{ lat: 38.9, lon: -77.4 }}
  eu-west-1:      {{ lat: 53.3, lon: -6.3 }}
  ap-southeast-1: {{ lat: 1.35, lon: 103.8 }}
"""


def meridian_top(geo=None):
    return MERIDIAN_TOP.format(geo=geo or ROOT / "config/geoip/demo-city.mmdb")


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def med(values):
    return statistics.median(values) if values else float("nan")


def fmt(values, digits=1):
    if not values:
        return "–"
    return f"{med(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def upstream_connections(pid, port):
    """Established TCP connections from `pid`'s process tree to 127.0.0.1:`port`."""
    pids = set(tree_pids(pid))
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    count = 0
    for line in out.splitlines():
        if any(f"pid={p}," in line for p in pids):
            count += 1
    return count


def h2load_run(url, seconds, clients=50, streams=10, data=None, headers=(), rps=None, log=None, cpus="0",
               sample=None):
    """h2load (prior knowledge, or TLS with ALPN h2 for https) for `seconds`: returns the
    requests that succeeded (a 2xx or 3xx answer), those that did not (more than 1% raises),
    and what `sample` returned. `rps`: a fixed rate
    per client (open loop); `log`: h2load's per-request log file; `sample`: called once halfway."""
    cmd = ["taskset", "-c", cpus, "h2load", "-t1", f"-c{clients}", f"-m{streams}", "-D", str(seconds),
           "--warm-up-time=0"]
    if data:
        cmd += ["-d", str(data)]
    for h in headers:
        cmd += ["-H", h]
    if rps:
        cmd += [f"--rps={rps}"]
    if log:
        cmd += [f"--log-file={log}"]
    proc = subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampled = {}
    if sample:
        timer = threading.Timer(seconds / 2, lambda: sampled.setdefault("value", sample()))
        timer.start()
    out, _ = proc.communicate(timeout=seconds + 60)
    if sample:
        timer.join()
    succeeded, failed = None, 0
    for line in out.splitlines():
        words = line.split()
        if line.startswith("requests:"):
            succeeded = int(words[7]) - failed
            failed += int(words[9]) + int(words[11]) + int(words[13])
        if line.startswith("status codes:"):
            # h2load counts a 5xx answer as succeeded: it is a failure here.
            errors = int(words[6]) + int(words[8])
            failed, succeeded = failed + errors, succeeded - errors
    if succeeded is None:
        raise RuntimeError(f"h2load said nothing useful:\n{out}")
    if failed * 100 > succeeded + failed:
        raise RuntimeError(f"more than 1% of the requests failed:\n{out}")
    return succeeded, failed, sampled.get("value")


def log_latencies(log, skip_us=0):
    """h2load's log: start (µs since the epoch), status, duration (µs). Durations, sorted, of
    requests started `skip_us` after the first."""
    rows = []
    for line in Path(log).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    if not rows:
        return []
    first = min(r[0] for r in rows)
    return sorted(r[2] for r in rows if r[0] - first >= skip_us)


# ---------------------------------------------------------------------------------------------
# --grpc: h2c upstreams and gRPC unary calls

GRPC_PORTS = {"backend": 18100, "backend-status": 18104, "meridian": 18101, "nginx": 18102, "haproxy": 18103}
GRPC_RATE = 5000
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers", "x-forwarded-for: 198.51.100.7")
GRPC_PATH = "/bench.Bench/Unary"


def grpc_configs(tmp):
    """The backend answers every call with an empty message (a 5-byte gRPC frame) and
    grpc-status 0 in trailers; a POST is sent to the static reply by an internal redirect."""
    root = Path(tmp) / "grpc-root"
    root.mkdir(exist_ok=True)
    (root / "reply").write_bytes(b"\0\0\0\0\0")
    payload = write(tmp, "grpc-request.bin", "")
    payload.write_bytes(b"\0\0\0\0\0")
    backend = write(tmp, "grpc-backend.conf", nginx_main(tmp, "grpc-backend") + f"""
http {{
  {nginx_http_common(tmp, "grpc-backend")}
  http2_max_concurrent_streams 1000;
  server {{
    listen 127.0.0.1:{GRPC_PORTS['backend']} http2;
    root {root};
    location / {{ error_page 405 =200 /reply; return 405; }}
    location = /reply {{ internal; types {{ }} default_type application/grpc; add_trailer grpc-status 0; }}
  }}
  server {{ listen 127.0.0.1:{GRPC_PORTS['backend-status']}; location / {{ stub_status; }} }}
}}
""")
    nginx = write(tmp, "grpc-nginx.conf", nginx_main(tmp, "grpc-nginx") + f"""
http {{
  {nginx_http_common(tmp, "grpc-nginx")}
  upstream grpcbe {{ server 127.0.0.1:{GRPC_PORTS['backend']}; keepalive 128; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{GRPC_PORTS['nginx']} http2; location / {{ grpc_pass grpc://grpcbe; }} }}
}}
""")
    haproxy = write(tmp, "grpc-haproxy.cfg", f"""
global
  nbthread 1
  maxconn 9990
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{GRPC_PORTS['haproxy']} proto h2
  default_backend be
backend be
  server s1 127.0.0.1:{GRPC_PORTS['backend']} proto h2
""")
    meridian = write(tmp, "grpc-meridian.yaml", meridian_top() + f"""
listeners:
  - {{ name: grpc, bind: "127.0.0.1:{GRPC_PORTS['meridian']}" }}
clusters:
  grpc:
    protocol: h2c
    endpoints: {{ eu-west-1: ["127.0.0.1:{GRPC_PORTS['backend']}"] }}
    connection_pool: {{ max_requests: 100000 }}
    outlier_detection: {{ enabled: false }}
routes:
  - {{ name: grpc, hosts: ["*"], cluster: grpc, timeout: 30s }}
""")
    return backend, nginx, haproxy, meridian, payload


def backend_requests():
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{GRPC_PORTS['backend-status']}/", timeout=5).read().decode()
    return int(text.splitlines()[2].split()[2])


def grpc_statuses(port, payload, calls=200):
    """`calls` unary calls over one connection with nghttp: how many ended with grpc-status 0
    in trailers (the rest did not)."""
    out = subprocess.run(["nghttp", "-v", "-n", f"--multiply={calls}", "-d", str(payload),
                          *[a for h in GRPC_HEADERS for a in ("-H", h)],
                          f"http://127.0.0.1:{port}{GRPC_PATH}"], capture_output=True, text=True, timeout=60)
    return out.stdout.count("grpc-status: 0")


def mode_grpc(args, meridian, tmp):
    reps, seconds, warm = (1, 3, 1) if args.quick else (3, 10, 2)
    backend, nginx, haproxy, conf, payload = grpc_configs(tmp)
    procs = Procs(tmp)
    order = ["direct", "meridian", "nginx", "haproxy"]
    ports = {"direct": GRPC_PORTS["backend"], **{n: GRPC_PORTS[n] for n in order[1:]}}
    try:
        procs.start("backend", [base.nginx_bin(), "-c", str(backend)], [GRPC_PORTS["backend"]])
        procs.start("meridian", [str(meridian), "run", "-c", str(conf)], [GRPC_PORTS["meridian"]])
        procs.start("nginx", [base.nginx_bin(), "-c", str(nginx)], [GRPC_PORTS["nginx"]])
        procs.start("haproxy", [base.haproxy_bin(), "-f", str(haproxy)], [GRPC_PORTS["haproxy"]])
        pids = {n: procs.procs["backend" if n == "direct" else n].pid for n in order}
        checked = {}
        for name in order:
            checked[name] = grpc_statuses(ports[name], payload)
            print(f"{name}: {checked[name]} of 200 calls ended with grpc-status 0", flush=True)
            if checked[name] != 200:
                raise RuntimeError(f"{name}: only {checked[name]} of 200 calls ended with grpc-status 0")
        closed = {n: {"cpu": [], "rps": [], "conns": []} for n in order}
        failures = {n: 0 for n in order}
        calls = {n: 0 for n in order}
        for rep in range(reps):
            for name in base.rotated(order, rep):
                quiet_enough()
                url = f"http://127.0.0.1:{ports[name]}{GRPC_PATH}"
                h2load_run(url, warm, data=payload, headers=GRPC_HEADERS)
                before, served_before = tree_ticks(pids[name]), backend_requests()
                done, failed, conns = h2load_run(url, seconds, data=payload, headers=GRPC_HEADERS,
                                         sample=lambda: upstream_connections(pids[name], GRPC_PORTS["backend"]))
                used = (tree_ticks(pids[name]) - before) / CLK_TCK
                served = backend_requests() - served_before - 1  # the status request itself
                failures[name] += failed
                calls[name] += done + failed
                if abs(served - done) > 1000:  # h2load ends mid-flight: at most the streams in flight differ
                    raise RuntimeError(f"{name}: h2load counted {done} calls, the backend served {served}")
                closed[name]["cpu"].append(used / done * 1e6)
                closed[name]["rps"].append(done / seconds)
                closed[name]["conns"].append(conns or 0)
                print(f"rep {rep + 1} {name}: {done / seconds:.0f} calls/s, {used / done * 1e6:.1f} µs CPU/call, "
                      f"{conns} upstream connections", flush=True)
        lat = {n: {"p50": [], "p99": [], "cpu": []} for n in order}
        for rep in range(reps):
            for name in base.rotated(order, rep):
                quiet_enough()
                url = f"http://127.0.0.1:{ports[name]}{GRPC_PATH}"
                log = Path(tmp) / f"grpc-{name}-{rep}.log"
                before = tree_ticks(pids[name])
                done, failed, _ = h2load_run(url, seconds + warm, data=payload, headers=GRPC_HEADERS,
                                             rps=GRPC_RATE // 50, log=log)
                failures[name] += failed
                calls[name] += done + failed
                used = (tree_ticks(pids[name]) - before) / CLK_TCK
                got = log_latencies(log, skip_us=warm * 1_000_000)
                lat[name]["p50"].append(percentile(got, 0.5))
                lat[name]["p99"].append(percentile(got, 0.99))
                lat[name]["cpu"].append(used / done * 1e6)
                print(f"rep {rep + 1} {name} @ {GRPC_RATE}/s: p50 {lat[name]['p50'][-1]} µs, p99 "
                      f"{lat[name]['p99'][-1]} µs, {used / done * 1e6:.1f} µs CPU/call", flush=True)
    finally:
        procs.stop_all()
    ref_cpu, ref_rps = med(closed["nginx"]["cpu"]), med(closed["nginx"]["rps"])
    hap_cpu = med(closed["haproxy"]["cpu"])
    lines = [
        conditions() + f". {versions(meridian)}. Meridian is the default `meridian run` (one worker per core "
        "it may use: one here), nginx one worker with `grpc_pass` and upstream `keepalive 128`, HAProxy "
        "`nbthread 1` (`bind … proto h2`, `server … proto h2`, `http-reuse always`). The backend is nginx "
        "(one worker, h2c) answering every call with an empty message (a 5-byte gRPC frame) and "
        "`grpc-status: 0` in trailers. Client: h2load -t1 over h2c, POST of a 5-byte empty message with "
        "`content-type: application/grpc` and `te: trailers`; load generator on CPU 0, proxy and backend on "
        "CPU 1. Before the runs, 200 calls through each target with nghttp all ended with `grpc-status: 0`; "
        "in each closed-loop run the backend's request count (stub_status) matched the calls h2load counted. "
        "Failed: calls answered with a 5xx or reset, over every run of the target (closed and open loop).",
        "",
        f"Closed loop: h2load -c50 -m10, {reps} × {seconds} s after {warm} s, order rotated; medians (min–max). "
        "Upstream connections: established connections from the proxy to the backend halfway through a run.",
        "",
        "| target | calls/s | × nginx | proxy CPU µs/call | × nginx | × HAProxy | upstream connections | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        r = closed[name]
        if name == "direct":
            lines.append(f"| backend direct | {fmt(r['rps'], 0)} | {med(r['rps']) / ref_rps:.2f} | – | – | – | – | "
                         f"{failures[name]} of {calls[name]} |")
            continue
        lines.append(f"| {name} | {fmt(r['rps'], 0)} | {med(r['rps']) / ref_rps:.2f} | {fmt(r['cpu'])} | "
                     f"{med(r['cpu']) / ref_cpu:.2f} | {med(r['cpu']) / hap_cpu:.2f} | {med(r['conns']):.0f} | "
                     f"{failures[name]} of {calls[name]} |")
    lines += ["", f"Open loop at {GRPC_RATE} calls/s (h2load --rps {GRPC_RATE // 50} on each of 50 connections, up "
              f"to 10 streams each; {reps} × {seconds} s after {warm} s at the same rate, order rotated; latency "
              "from h2load's per-request log, not corrected for coordinated omission; medians of the runs). "
              "Added: over the backend direct p50 / p99 of the same runs, µs:", "",
              "| target | p50 | p99 | added p50 | added p99 | proxy CPU µs/call |", "|---|---|---|---|---|---|"]
    b50, b99 = med(lat["direct"]["p50"]), med(lat["direct"]["p99"])
    for name in order:
        r = lat[name]
        if name == "direct":
            lines.append(f"| backend direct | {b50:.0f} | {b99:.0f} | – | – | – |")
            continue
        lines.append(f"| {name} | {med(r['p50']):.0f} | {med(r['p99']):.0f} | {med(r['p50']) - b50:+.0f} | "
                     f"{med(r['p99']) - b99:+.0f} | {fmt(r['cpu'])} |")
    write_section("gRPC unary and h2c upstreams", lines, Path(args.out))


# ---------------------------------------------------------------------------------------------
# --threads: the default runtime at 1 and 2 cores

HTTP_PORTS = {"backend": 18200, "meridian": 18201, "nginx": 18202, "haproxy": 18203}
HTTP_ORDER = ["direct", "meridian", "nginx", "haproxy"]


def http_configs(tmp, workers):
    """The backend (nginx, 100-byte body), Meridian with one HTTP/1.1 listener, nginx with
    `workers` workers each on its own `reuseport` listener, HAProxy with `nbthread workers`."""
    body = base.BODY.strip()
    backend = write(tmp, f"backend-{workers}.conf", nginx_main(tmp, f"backend-{workers}", workers) + f"""
http {{
  {nginx_http_common(tmp, f"backend-{workers}")}
  server {{ listen 127.0.0.1:{HTTP_PORTS['backend']} reuseport; location / {{ return 200 "{body}\\n"; }} }}
}}
""")
    nginx = write(tmp, f"nginx-{workers}.conf", nginx_main(tmp, f"nginx-{workers}", workers) + f"""
http {{
  {nginx_http_common(tmp, f"nginx-{workers}")}
  upstream backend {{ server 127.0.0.1:{HTTP_PORTS['backend']}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{HTTP_PORTS['nginx']} reuseport;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }}
  }}
}}
""")
    haproxy = write(tmp, f"haproxy-{workers}.cfg", base.haproxy_conf(tmp).read_text()
                    .replace("nbthread 1", f"nbthread {workers}")
                    .replace(f":{base.PORTS['haproxy']}", f":{HTTP_PORTS['haproxy']}")
                    .replace(f":{base.PORTS['backend']}", f":{HTTP_PORTS['backend']}"))
    meridian = write(tmp, "meridian-http.yaml", meridian_top() + f"""
listeners:
  - {{ name: http, bind: "127.0.0.1:{HTTP_PORTS['meridian']}" }}
clusters:
  bench:
    endpoints: {{ eu-west-1: ["127.0.0.1:{HTTP_PORTS['backend']}"] }}
    outlier_detection: {{ enabled: false }}
routes:
  - {{ name: bench, hosts: ["*"], cluster: bench }}
""")
    return backend, nginx, haproxy, meridian


def wrk_run(port, seconds, connections, threads, cpus, script=None, xff="198.51.100.7"):
    """wrk on `cpus`: the requests answered; a non-2xx answer or a socket error raises."""
    cmd = ["taskset", "-c", cpus, "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s"]
    cmd += ["-s", str(script)] if script else ["-H", f"X-Forwarded-For: {xff}"]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    requests = None
    for line in out.splitlines():
        if "requests in" in line:
            requests = int(line.split()[0])
        if line.strip().startswith(("Non-2xx", "Socket errors")):
            raise RuntimeError(f"errors:\n{out}")
    if not requests:
        raise RuntimeError(f"wrk said nothing useful:\n{out}")
    return requests


def closed_http(order, pids, ports, reps, seconds, warm, connections, threads, cpus, script=None, label=""):
    got = {n: {"cpu": [], "rps": []} for n in order}
    for rep in range(reps):
        for name in base.rotated(order, rep):
            quiet_enough()
            wrk_run(ports[name], warm, connections, threads, cpus, script)
            before = tree_ticks(pids[name])
            done = wrk_run(ports[name], seconds, connections, threads, cpus, script)
            used = (tree_ticks(pids[name]) - before) / CLK_TCK
            got[name]["cpu"].append(used / done * 1e6)
            got[name]["rps"].append(done / seconds)
            print(f"rep {rep + 1} {name}{label}: {done / seconds:.0f} req/s, {used / done * 1e6:.1f} µs CPU/req",
                  flush=True)
    return got


def thread_count(pid):
    return sum(len(list(Path(f"/proc/{p}/task").iterdir())) for p in tree_pids(pid))


def under_callgrind(tmp, label, cmd, port, stop, load):
    """Run `cmd` under callgrind on CPU 1 (so one worker) until it listens on `port`, then `load()`,
    then stop it with `stop`: the user-space instructions it ran, and what `load()` returned."""
    out = Path(tmp) / f"callgrind.{label}"
    proc = subprocess.Popen(["taskset", "-c", "1", "valgrind", "--tool=callgrind",
                             f"--callgrind-out-file={out}", *cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MERIDIAN_LOG": "error"})
    try:
        base.wait_port(port, timeout=120)
        done = load()
    finally:
        proc.send_signal(stop)
        proc.wait(timeout=120)
    line = next(l for l in out.read_text().splitlines() if l.startswith(("summary:", "totals:")))
    return int(line.split()[1]), done


def callgrind_h2load(tmp, name, cmd, port, stop, h2load_args, counts):
    """User-space instructions per request under callgrind: h2load (on CPU 0) with `h2load_args(n)`
    for each of the two request counts, the difference in instructions over the difference in
    requests, so start-up and shutdown cancel out (as policy_cost.py counts them)."""
    totals = [under_callgrind(tmp, f"{name}.{n}", cmd, port, stop,
                              lambda: subprocess.run(["taskset", "-c", "0", "h2load", *h2load_args(n)],
                                                     check=True, capture_output=True))[0]
              for n in counts]
    return (totals[1] - totals[0]) / (counts[1] - counts[0])


def h1_load(port):
    """h2load's arguments for n HTTP/1.1 requests on 10 keep-alive connections."""
    return lambda n: ["--h1", "-n", str(n), "-c", "10", "-H", "X-Forwarded-For: 198.51.100.7",
                      f"http://127.0.0.1:{port}/"]


def mode_threads(args, meridian, tmp):
    reps, seconds, warm = (1, 3, 1) if args.quick else (3, 8, 2)
    rows = {}
    instructions = {}
    if not args.quick:
        backend, nginx, haproxy, conf = http_configs(tmp, 1)
        procs = Procs(tmp)
        try:
            procs.start("backend", [base.nginx_bin(), "-c", str(backend)], [HTTP_PORTS["backend"]])
            # valgrind keeps a few descriptors for itself: HAProxy's full maxconn would not fit.
            haproxy_cg = write(tmp, "haproxy-callgrind.cfg", haproxy.read_text().replace("maxconn 9990", "maxconn 1000"))
            for name, cmd, stop in (
                    ("meridian", [str(meridian), "run", "-c", str(conf)], signal.SIGTERM),
                    ("nginx", [base.nginx_bin(), "-c", str(nginx)], signal.SIGQUIT),
                    ("haproxy", [base.haproxy_bin(), "-f", str(haproxy_cg)], signal.SIGTERM)):
                instructions[name] = callgrind_h2load(tmp, name, cmd, HTTP_PORTS[name], stop,
                                                     h1_load(HTTP_PORTS[name]), (2000, 12000))
                print(f"{name}: {instructions[name]:,.0f} instructions per request (callgrind)", flush=True)
        finally:
            procs.stop_all()
    for cores in (1, 2):
        # One core: the proxy and the backend on CPU 1, wrk alone on CPU 0. Two: every process
        # may run on both cores, wrk included.
        cpus, load_cpus = ("1", "0") if cores == 1 else ("0,1", "0,1")
        backend, nginx, haproxy, conf = http_configs(tmp, cores)
        procs = Procs(tmp)
        ports = {"direct": HTTP_PORTS["backend"], **{n: HTTP_PORTS[n] for n in HTTP_ORDER[1:]}}
        try:
            procs.start("backend", [base.nginx_bin(), "-c", str(backend)], [HTTP_PORTS["backend"]], cpus=cpus,
                        stop=signal.SIGQUIT)
            procs.start("meridian", [str(meridian), "run", "-c", str(conf)], [HTTP_PORTS["meridian"]], cpus=cpus)
            procs.start("nginx", [base.nginx_bin(), "-c", str(nginx)], [HTTP_PORTS["nginx"]], cpus=cpus,
                        stop=signal.SIGQUIT)
            procs.start("haproxy", [base.haproxy_bin(), "-f", str(haproxy)], [HTTP_PORTS["haproxy"]], cpus=cpus)
            pids = {n: procs.procs["backend" if n == "direct" else n].pid for n in HTTP_ORDER}
            threads = {n: thread_count(pids[n]) for n in HTTP_ORDER}
            print(f"{cores} core(s): threads {threads}", flush=True)
            got = closed_http(HTTP_ORDER, pids, ports, reps, seconds, warm, 50 * cores, cores, load_cpus,
                              label=f" ({cores} core{'s' if cores > 1 else ''})")
            for name in HTTP_ORDER:
                rows[(name, cores)] = (got[name], threads[name])
        finally:
            procs.stop_all()
    lines = [
        conditions() + f". {versions(meridian)}, release build (`cargo build --release`). Plain `meridian run` "
        "(no `--worker-threads`: one worker per core the process may run on, which `taskset` sets), nginx "
        "with 1 or 2 workers, each on its own `reuseport` listener, upstream `keepalive 128`, HAProxy `nbthread` "
        "1 or 2 (`http-reuse always`); the backend is nginx with the same number of workers (100-byte body). "
        "One core: proxy and backend on CPU 1, wrk -t1 -c50 alone on CPU 0. Two cores: every process, wrk "
        "-t2 -c100 included, on both cores, so req/s is what is left after the load generator and the backend; "
        f"proxy CPU per request is the figure that holds. GET with X-Forwarded-For (full geo path); {reps} × "
        f"{seconds} s after {warm} s, order rotated; medians (min–max). Threads: the process tree's threads "
        "(Meridian's include the control thread and tokio's blocking pool, idle).",
        "",
        "| target | cores | threads | req/s | × nginx | proxy CPU µs/request | × nginx | × HAProxy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cores in (1, 2):
        ref, hap = rows[("nginx", cores)][0], rows[("haproxy", cores)][0]
        for name in HTTP_ORDER:
            got, threads = rows[(name, cores)]
            rps = f"{fmt(got['rps'], 0)} | {med(got['rps']) / med(ref['rps']):.2f}"
            if name == "direct":
                lines.append(f"| backend direct | {cores} | {threads} | {rps} | – | – | – |")
                continue
            lines.append(f"| {name} | {cores} | {threads} | {rps} | {fmt(got['cpu'])} | "
                         f"{med(got['cpu']) / med(ref['cpu']):.2f} | {med(got['cpu']) / med(hap['cpu']):.2f} |")
    if instructions:
        lines += ["", "User-space instructions per request at one core (callgrind, the process on CPU 1; h2load --h1, "
                  "10 keep-alive connections, 2,000 and 12,000 requests, the difference over 10,000): " + ", ".join(
                      f"{n} {v:,.0f} ({v / instructions['nginx']:.2f}× nginx)" for n, v in instructions.items()) + "."]
    write_section("Default runtime at one and two cores", lines, Path(args.out))


# ---------------------------------------------------------------------------------------------
# --geo-full: a full GeoLite2-City and a random public client address per request

GEO_PORTS = {"us-east-1": 18301, "eu-west-1": 18302, "ap-southeast-1": 18303, "meridian": 18310, "nginx": 18311}
# The same decision on both sides: the client's continent picks the region (an explicit
# order for Meridian, a `map` for nginx); an address the database does not place goes to
# eu-west-1 (Meridian's local region, nginx's map default).
CONTINENTS = {"NA": "us-east-1", "SA": "us-east-1", "AN": "us-east-1", "EU": "eu-west-1", "AF": "eu-west-1",
              "AS": "ap-southeast-1", "OC": "ap-southeast-1"}
GEO_SEED = 42


def geolite2_city():
    """The database benches/geo_lookup.rs uses: MERIDIAN_GEOLITE2_CITY, else PyPI's
    `maxminddb-geolite2` (installed into /tmp when Python cannot import it)."""
    if os.environ.get("MERIDIAN_GEOLITE2_CITY"):
        return Path(os.environ["MERIDIAN_GEOLITE2_CITY"])
    find = ("import os, _maxminddb_geolite2 as m; "
            "print(os.path.join(os.path.dirname(m.__file__), 'GeoLite2-City.mmdb'))")
    target = Path("/tmp/meridian-geolite2")
    for path in (None, str(target)):
        env = {**os.environ, "PYTHONPATH": path} if path else None
        out = subprocess.run([sys.executable, "-c", find], capture_output=True, text=True, env=env)
        if out.returncode == 0 and Path(out.stdout.strip()).exists():
            return Path(out.stdout.strip())
        if path is None:
            print(f"fetching maxminddb-geolite2 from PyPI into {target}", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                            "maxminddb-geolite2"], check=True)
    raise RuntimeError("no GeoLite2-City database: pip install maxminddb-geolite2 did not provide one")


def random_client_script(tmp):
    """A wrk script giving every request a new random public IPv4 address in X-Forwarded-For
    (seeded, so each run sends the same sequence): private, loopback, link-local, CGNAT,
    multicast and reserved space is skipped, as in benches/geo_lookup.rs."""
    return write(tmp, "random-client.lua", f"""
math.randomseed({GEO_SEED})
local random = math.random
local function public_ip()
  while true do
    local a, b = random(1, 223), random(0, 255)
    if not (a == 10 or a == 127 or (a == 169 and b == 254) or (a == 172 and b >= 16 and b < 32)
            or (a == 192 and b == 168) or (a == 100 and b >= 64 and b < 128)
            or (a == 192 and b == 0) or (a == 198 and (b == 18 or b == 19 or b == 51))
            or (a == 203 and b == 0)) then
      return a .. "." .. b .. "." .. random(0, 255) .. "." .. random(1, 254)
    end
  end
end
request = function()
  return wrk.format(nil, nil, {{ ["X-Forwarded-For"] = public_ip() }})
end
""")


def geo_configs(tmp, db):
    body = base.BODY.strip()
    servers = "\n".join(f"  server {{ listen 127.0.0.1:{GEO_PORTS[r]}; location / {{ add_header x-backend {r}; "
                        f"return 200 \"{body}\\n\"; }} }}" for r in ("us-east-1", "eu-west-1", "ap-southeast-1"))
    backend = write(tmp, "geo-backend.conf", nginx_main(tmp, "geo-backend") + f"""
http {{
  {nginx_http_common(tmp, "geo-backend")}
{servers}
}}
""")
    upstreams = "\n".join(f"  upstream {r} {{ server 127.0.0.1:{GEO_PORTS[r]}; keepalive 128; }}"
                          for r in ("us-east-1", "eu-west-1", "ap-southeast-1"))
    mapping = " ".join(f"{c} {r};" for c, r in CONTINENTS.items())
    nginx = write(tmp, "geo-nginx.conf", nginx_main(
        tmp, "geo-nginx", modules="load_module /usr/lib/nginx/modules/ngx_http_geoip2_module.so;") + f"""
http {{
  {nginx_http_common(tmp, "geo-nginx")}
  geoip2 {db} {{ $geoip2_continent source=$http_x_forwarded_for continent code; }}
  map $geoip2_continent $region {{ default eu-west-1; {mapping} }}
{upstreams}
  server {{
    listen 127.0.0.1:{GEO_PORTS['nginx']};
    location / {{ proxy_pass http://$region; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }}
  }}
}}
""")
    order = {c: [r] + [o for o in ("eu-west-1", "us-east-1", "ap-southeast-1") if o != r] for c, r in CONTINENTS.items()}
    continents = ", ".join(f"{c}: [{', '.join(rs)}]" for c, rs in order.items())
    meridian = write(tmp, "geo-meridian.yaml", meridian_top(db) + f"""
listeners:
  - {{ name: http, bind: "127.0.0.1:{GEO_PORTS['meridian']}" }}
clusters:
  bench:
    endpoints:
      us-east-1: ["127.0.0.1:{GEO_PORTS['us-east-1']}"]
      eu-west-1: ["127.0.0.1:{GEO_PORTS['eu-west-1']}"]
      ap-southeast-1: ["127.0.0.1:{GEO_PORTS['ap-southeast-1']}"]
    outlier_detection: {{ enabled: false }}
routes:
  - name: bench
    hosts: ["*"]
    cluster: bench
    steering: {{ continents: {{ {continents} }} }}
""")
    return backend, nginx, meridian


def same_decisions(count=300):
    """Both proxies asked with the same `count` random public clients: how many went to the
    same region's backend (the backend names itself in x-backend)."""
    import http.client
    rng = random.Random(GEO_SEED)
    same = 0
    for _ in range(count):
        while True:
            ip = ".".join(str(x) for x in (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255),
                                            rng.randint(1, 254)))
            first = int(ip.split(".")[0])
            if first not in (10, 127, 100, 169, 172, 192, 198, 203):
                break
        seen = []
        for port in (GEO_PORTS["meridian"], GEO_PORTS["nginx"]):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/", headers={"X-Forwarded-For": ip})
            answer = conn.getresponse()
            answer.read()
            seen.append(answer.getheader("x-backend"))
            conn.close()
        same += seen[0] == seen[1] and seen[0] is not None
    return same


def callgrind_wrk(tmp, name, cmd, port, script, stop):
    """User-space instructions per request under callgrind with random clients: two wrk runs
    of different lengths against the process under valgrind; the difference in instructions
    over the difference in requests, so start-up and shutdown cancel out."""
    points = [under_callgrind(tmp, f"{name}.{seconds}", cmd, port, stop,
                              lambda: wrk_run(port, seconds, 10, 1, "0", script))
              for seconds in (4, 12)]
    return (points[1][0] - points[0][0]) / (points[1][1] - points[0][1])


def criterion_geo(db):
    """`cargo bench --bench geo_lookup` on the same database: the median of each benchmark, ns."""
    out = subprocess.run(["cargo", "bench", "--bench", "geo_lookup"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "MERIDIAN_GEOLITE2_CITY": str(db)})
    figures, name = {}, None
    for line in (out.stdout + out.stderr).splitlines():
        words = line.split()
        if words and words[0].startswith("geo/"):
            name = words[0]
        if name and "time:" in line:
            at = words.index("time:")
            value, unit = float(words[at + 3]), words[at + 4]
            figures[name] = value * {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6}[unit]
            name = None
    if not figures:
        raise RuntimeError(f"cargo bench --bench geo_lookup gave no figures:\n{out.stderr[-3000:]}")
    return figures


def mode_geo_full(args, meridian, tmp):
    reps, seconds, warm = (1, 3, 1) if args.quick else (3, 8, 2)
    db = geolite2_city()
    size = db.stat().st_size / 1e6
    backend, nginx, conf = geo_configs(tmp, db)
    script = random_client_script(tmp)
    procs = Procs(tmp)
    order = ["meridian", "nginx"]
    ports = {n: GEO_PORTS[n] for n in order}
    try:
        procs.start("backend", [base.nginx_bin(), "-c", str(backend)], [GEO_PORTS["eu-west-1"]])
        instructions = {}
        if not args.quick:
            for name, cmd, stop in (("meridian", [str(meridian), "run", "-c", str(conf)], signal.SIGTERM),
                                    ("nginx", [base.nginx_bin(), "-c", str(nginx)], signal.SIGQUIT)):
                instructions[name] = callgrind_wrk(tmp, name, cmd, GEO_PORTS[name], script, stop)
                print(f"{name}: {instructions[name]:,.0f} instructions per request (callgrind)", flush=True)
        procs.start("meridian", [str(meridian), "run", "-c", str(conf)], [GEO_PORTS["meridian"]])
        procs.start("nginx", [base.nginx_bin(), "-c", str(nginx)], [GEO_PORTS["nginx"]])
        pids = {n: procs.procs[n].pid for n in order}
        agreed = same_decisions()
        print(f"same region for {agreed} of 300 random clients", flush=True)
        got = closed_http(order, pids, ports, reps, seconds, warm, 50, 1, "0", script, " random clients")
    finally:
        procs.stop_all()
    figures = {} if args.quick else criterion_geo(db)
    ref = got["nginx"]
    lines = [
        conditions() + f". {versions(meridian)}, release build. GeoLite2-City from PyPI's `maxminddb-geolite2` "
        f"({size:.0f} MB, fetched when run, not in the repository). Every request carries a new random public "
        f"IPv4 address in X-Forwarded-For (a wrk Lua script, seed {GEO_SEED}). The decision on both sides: "
        "the client's continent picks the region's backend (Meridian: `steering.continents` on the route; "
        "nginx: Debian's `libnginx-mod-http-geoip2`, `geoip2 … source=$http_x_forwarded_for continent code` "
        "and a `map` to the upstream), unplaced clients to eu-west-1; the backend (one nginx, a port per "
        f"region) names itself in a header, and {agreed} of 300 random clients were sent to the same region "
        "by both. Plain `meridian run` pinned to CPU 1 (so one worker), nginx one worker, both with the "
        f"backend on CPU 1 and wrk -t1 -c50 alone on CPU 0; {reps} × {seconds} s after {warm} s, order rotated; "
        "medians (min–max).",
        "",
        "| target | req/s | × nginx | proxy CPU µs/request | × nginx | instructions/request | × nginx |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in order:
        r = got[name]
        ins = (f"{instructions[name]:,.0f} | {instructions[name] / instructions['nginx']:.2f}"
               if instructions else "– | –")
        lines.append(f"| {name} | {fmt(r['rps'], 0)} | {med(r['rps']) / med(ref['rps']):.2f} | {fmt(r['cpu'])} | "
                     f"{med(r['cpu']) / med(ref['cpu']):.2f} | {ins} |")
    if instructions:
        lines += ["", "Instructions: callgrind, the proxy under valgrind for a 4 s and a 12 s wrk run (10 "
                  "connections, the same random clients); the difference in instructions over the difference "
                  "in requests."]
    if figures:
        lines += ["", "`cargo bench --bench geo_lookup` on the same database (one run, medians): " + "; ".join(
            f"`{k}` {v:.0f} ns" for k, v in figures.items()) + "."]
    write_section("Full-size GeoIP database, a random client per request", lines, Path(args.out))


# ---------------------------------------------------------------------------------------------
# --tls-handshakes: new TLS 1.3 connections, one request each, full and resumed

TLS_PORTS = {"backend": 18400, ("meridian", "ecdsa"): 18401, ("meridian", "rsa"): 18402,
             ("nginx", "ecdsa"): 18411, ("nginx", "rsa"): 18412}
TLS_KEYS = {"ecdsa": ("ECDSA P-256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            "rsa": ("RSA-2048", ["-newkey", "rsa:2048"])}
# Client processes at once, all on CPU 0: each waits on every round trip of its handshakes,
# and the server's core would idle between them.
TLS_CLIENTS = 6
# One client process: new TLS 1.3 connections for SECONDS, each with one HTTP/1.0 GET read to
# the end of its Content-Length, then closed. openssl s_time reads each answer until the server
# closes, and took about 35 ms a connection with both servers' CPU mostly idle: it measured
# waits, not handshakes.
# With "reuse" each connection offers the session ticket of the one before it.
TLS_CLIENT = r"""
import socket, ssl, sys, time
port, seconds, reuse = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "reuse"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
session, done, resumed, failed = None, 0, 0, 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = ctx.wrap_socket(raw, session=session if reuse else None)
    conn.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            break
        body += chunk
    if head.split(b"\\r\\n")[0].split(b" ")[1:2] == [b"200"] and len(body) == length:
        done += 1
    else:
        failed += 1
    resumed += conn.session_reused
    if reuse:
        session = conn.session
    conn.close()
print(done, resumed, failed)
"""


def tls_clients(port, seconds, reuse):
    """`TLS_CLIENTS` client processes on CPU 0: (connections answered, resumed, seconds)."""
    started = time.monotonic()
    procs = [subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", TLS_CLIENT, str(port), str(seconds),
                               "reuse" if reuse else "new"], stdout=subprocess.PIPE, text=True)
             for _ in range(TLS_CLIENTS)]
    outs = [proc.communicate(timeout=seconds + 60)[0] for proc in procs]
    wall = time.monotonic() - started
    done = resumed = failed = 0
    for out in outs:
        d, r, f = map(int, out.split())
        done, resumed, failed = done + d, resumed + r, failed + f
    if failed:
        raise RuntimeError(f"{failed} of {done + failed} connections got no 200 answer")
    return done, resumed, wall


def tls_certificate(tmp, kind):
    cert, key = Path(tmp) / f"{kind}.crt", Path(tmp) / f"{kind}.key"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", *TLS_KEYS[kind][1], "-nodes", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def tls_configs(tmp):
    body = base.BODY.strip()
    backend = write(tmp, "tls-backend.conf", nginx_main(tmp, "tls-backend") + f"""
http {{
  {nginx_http_common(tmp, "tls-backend")}
  server {{ listen 127.0.0.1:{TLS_PORTS['backend']}; location / {{ return 200 "{body}\\n"; }} }}
}}
""")
    servers = "\n".join(
        f"  server {{ listen 127.0.0.1:{TLS_PORTS[('nginx', k)]} ssl; ssl_certificate {tls_certificate(tmp, k)[0]}; "
        f"ssl_certificate_key {tls_certificate(tmp, k)[1]}; ssl_protocols TLSv1.3; ssl_session_tickets on; "
        "location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; } }" for k in TLS_KEYS)
    nginx = write(tmp, "tls-nginx.conf", nginx_main(tmp, "tls-nginx") + f"""
http {{
  {nginx_http_common(tmp, "tls-nginx")}
  upstream backend {{ server 127.0.0.1:{TLS_PORTS['backend']}; keepalive 128; }}
{servers}
}}
""")
    listeners = "\n".join(
        f"  - {{ name: {k}, bind: \"127.0.0.1:{TLS_PORTS[('meridian', k)]}\", tls: {{ min_version: \"1.3\", "
        f"certificates: [{{ cert: {tls_certificate(tmp, k)[0]}, key: {tls_certificate(tmp, k)[1]} }}] }} }}"
        for k in TLS_KEYS)
    meridian = write(tmp, "tls-meridian.yaml", meridian_top() + f"""
listeners:
{listeners}
clusters:
  bench:
    endpoints: {{ eu-west-1: ["127.0.0.1:{TLS_PORTS['backend']}"] }}
    outlier_detection: {{ enabled: false }}
routes:
  - {{ name: bench, hosts: ["*"], cluster: bench }}
""")
    return backend, nginx, meridian


def mode_tls_handshakes(args, meridian, tmp):
    reps, seconds = (1, 3) if args.quick else (3, 8)
    backend, nginx, conf = tls_configs(tmp)
    procs = Procs(tmp)
    order = ["meridian", "nginx"]
    got = {}
    try:
        procs.start("backend", [base.nginx_bin(), "-c", str(backend)], [TLS_PORTS["backend"]])
        procs.start("meridian", [str(meridian), "run", "-c", str(conf)],
                    [TLS_PORTS[("meridian", k)] for k in TLS_KEYS])
        procs.start("nginx", [base.nginx_bin(), "-c", str(nginx)], [TLS_PORTS[("nginx", k)] for k in TLS_KEYS])
        pids = {n: procs.procs[n].pid for n in order}
        for rep in range(reps):
            for kind in TLS_KEYS:
                for reuse in (False, True):
                    for name in base.rotated(order, rep):
                        quiet_enough()
                        before = tree_ticks(pids[name])
                        done, resumed, wall = tls_clients(TLS_PORTS[(name, kind)], seconds, reuse)
                        used = (tree_ticks(pids[name]) - before) / CLK_TCK
                        row = got.setdefault((name, kind, reuse), {"rate": [], "cpu": [], "resumed": []})
                        row["rate"].append(done / wall)
                        row["cpu"].append(used / done * 1e6)
                        row["resumed"].append(resumed / done)
                        print(f"rep {rep + 1} {name} {kind} {'resumed' if reuse else 'full'}: {done / wall:.0f}/s, "
                              f"{used / done * 1e6:.0f} µs CPU each, {resumed} of {done} resumed", flush=True)
    finally:
        procs.stop_all()
    lines = [
        conditions() + f". {versions(meridian)} (OpenSSL {subprocess.run(['openssl', 'version'], capture_output=True, text=True).stdout.split()[1]}), "
        "release build. A new TLS 1.3 connection per request, one HTTP/1.0 GET on it proxied to the backend "
        f"(nginx, keep-alive), read to its end, then closed: {TLS_CLIENTS} Python `ssl` client processes at once "
        "on CPU 0 with TCP_NODELAY (`openssl s_time`, which reads until the server closes, took about 35 ms a "
        "connection with the servers mostly idle); full handshakes, or resumed ones (each connection offers the session "
        "ticket of the one before; the share of connections the client saw resumed is in the last column). Plain `meridian run` (session tickets on, "
        "the default) and nginx (one worker, `ssl_session_tickets on`) on the same certificate, each with "
        f"the backend on CPU 1; {reps} × {seconds} s, order rotated; medians (min–max). Handshakes/s is what "
        "the client side (one core, shared with other processes on the machine) could drive; proxy CPU per "
        "connection is the figure that holds, and one core's capacity is 10⁶ over it.",
        "",
        "| target | certificate | handshake | connections/s | × nginx | proxy CPU µs/connection | × nginx | "
        "one core's capacity/s | resumed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in TLS_KEYS:
        for reuse in (False, True):
            ref = got[("nginx", kind, reuse)]
            for name in order:
                r = got[(name, kind, reuse)]
                lines.append(f"| {name} | {TLS_KEYS[kind][0]} | {'resumed' if reuse else 'full'} | "
                             f"{fmt(r['rate'], 0)} | {med(r['rate']) / med(ref['rate']):.2f} | {fmt(r['cpu'], 0)} | "
                             f"{med(r['cpu']) / med(ref['cpu']):.2f} | {1e6 / med(r['cpu']):.0f} | "
                             f"{med(r['resumed']) * 100:.0f}% |")
    write_section("TLS 1.3 handshakes", lines, Path(args.out))


# ---------------------------------------------------------------------------------------------
# --h2: h2c latency at a fixed rate, and instructions per request

H2_PORTS = {"backend": 18500, "meridian": 18501, "nginx": 18502}
H2_RATE = 5000


def h2_configs(tmp):
    body = base.BODY.strip()
    backend = write(tmp, "h2-backend.conf", nginx_main(tmp, "h2-backend") + f"""
http {{
  {nginx_http_common(tmp, "h2-backend")}
  server {{ listen 127.0.0.1:{H2_PORTS['backend']}; location / {{ return 200 "{body}\\n"; }} }}
}}
""")
    nginx = write(tmp, "h2-nginx.conf", nginx_main(tmp, "h2-nginx") + f"""
http {{
  {nginx_http_common(tmp, "h2-nginx")}
  upstream backend {{ server 127.0.0.1:{H2_PORTS['backend']}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{H2_PORTS['nginx']} http2;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }}
  }}
}}
""")
    meridian = write(tmp, "h2-meridian.yaml", meridian_top() + f"""
listeners:
  - {{ name: h2c, bind: "127.0.0.1:{H2_PORTS['meridian']}" }}
clusters:
  bench:
    endpoints: {{ eu-west-1: ["127.0.0.1:{H2_PORTS['backend']}"] }}
    outlier_detection: {{ enabled: false }}
routes:
  - {{ name: bench, hosts: ["*"], cluster: bench }}
""")
    return backend, nginx, meridian


def h2c_load(port):
    """h2load's arguments for n h2c requests on 10 connections, one stream each."""
    return lambda n: ["-n", str(n), "-c", "10", "-m", "1", "-H", "x-forwarded-for: 198.51.100.7",
                      f"http://127.0.0.1:{port}/"]


def mode_h2(args, meridian, tmp):
    reps, seconds, warm = (1, 3, 1) if args.quick else (5, 8, 2)
    backend, nginx, conf = h2_configs(tmp)
    procs = Procs(tmp)
    order = ["direct", "meridian", "nginx"]
    ports = {"direct": H2_PORTS["backend"], "meridian": H2_PORTS["meridian"], "nginx": H2_PORTS["nginx"]}
    lat = {n: {"p50": [], "p99": [], "cpu": []} for n in order}
    instructions = {}
    try:
        procs.start("backend", [base.nginx_bin(), "-c", str(backend)], [H2_PORTS["backend"]])
        if not args.quick:
            for name, cmd, stop in (("meridian", [str(meridian), "run", "-c", str(conf)], signal.SIGTERM),
                                    ("nginx", [base.nginx_bin(), "-c", str(nginx)], signal.SIGQUIT)):
                instructions[name] = callgrind_h2load(tmp, name, cmd, H2_PORTS[name], stop,
                                                     h2c_load(H2_PORTS[name]), (1000, 6000))
                print(f"{name}: {instructions[name]:,.0f} instructions per h2c request (callgrind)", flush=True)
        procs.start("meridian", [str(meridian), "run", "-c", str(conf)], [H2_PORTS["meridian"]])
        procs.start("nginx", [base.nginx_bin(), "-c", str(nginx)], [H2_PORTS["nginx"]])
        pids = {n: procs.procs["backend" if n == "direct" else n].pid for n in order}
        for rep in range(reps):
            for name in base.rotated(order, rep):
                quiet_enough()
                log = Path(tmp) / f"h2-{name}-{rep}.log"
                # The backend direct is the HTTP/1.1 baseline (as in run.py's HTTP/2 table).
                extra = ["--h1"] if name == "direct" else []
                before = tree_ticks(pids[name])
                cmd = ["taskset", "-c", "0", "h2load", "-t1", "-c50", "-m10", "-D", str(seconds + warm),
                       "--warm-up-time=0", f"--rps={H2_RATE // 50}", f"--log-file={log}", *extra,
                       "-H", "x-forwarded-for: 198.51.100.7", f"http://127.0.0.1:{ports[name]}/"]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                done = int(next(l for l in out.splitlines() if l.startswith("requests:")).split()[7])
                used = (tree_ticks(pids[name]) - before) / CLK_TCK
                got = log_latencies(log, skip_us=warm * 1_000_000)
                lat[name]["p50"].append(percentile(got, 0.5))
                lat[name]["p99"].append(percentile(got, 0.99))
                lat[name]["cpu"].append(used / done * 1e6)
                print(f"rep {rep + 1} {name} @ {H2_RATE}/s: p50 {lat[name]['p50'][-1]} µs, p99 "
                      f"{lat[name]['p99'][-1]} µs, {used / done * 1e6:.1f} µs CPU/req", flush=True)
    finally:
        procs.stop_all()
    b50, b99 = med(lat["direct"]["p50"]), med(lat["direct"]["p99"])
    lines = [
        conditions() + f". {versions(meridian)}, release build. h2c from the client (prior knowledge), "
        "HTTP/1.1 keep-alive to the backend (nginx, one worker, 100-byte body); plain `meridian run` and "
        "nginx (one worker, `listen … http2`), each with the backend on CPU 1, h2load on CPU 0. Open loop: "
        f"h2load --rps {H2_RATE // 50} on each of 50 connections ({H2_RATE} req/s, up to 10 streams each), "
        f"{reps} × {seconds} s after {warm} s at the same rate, order rotated; latency from h2load's "
        "per-request log (not corrected for coordinated omission); medians of the runs. Added: over the "
        "backend direct (HTTP/1.1, same h2load rate) of the same runs, µs.",
        "",
        "| target | p50 | p99 | added p50 | added p99 | p50 of single runs | proxy CPU µs/request | × nginx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref = med(lat["nginx"]["cpu"])
    for name in order:
        r = lat[name]
        spread = f"{min(r['p50']):.0f}–{max(r['p50']):.0f}"
        if name == "direct":
            lines.append(f"| backend direct (HTTP/1.1) | {b50:.0f} | {b99:.0f} | – | – | {spread} | – | – |")
            continue
        lines.append(f"| {name} | {med(r['p50']):.0f} | {med(r['p99']):.0f} | {med(r['p50']) - b50:+.0f} | "
                     f"{med(r['p99']) - b99:+.0f} | {spread} | {fmt(r['cpu'])} | {med(r['cpu']) / ref:.2f} |")
    if instructions:
        lines += ["", "User-space instructions per h2c request (callgrind; h2load 10 connections, one stream each, "
                  "1,000 and 6,000 requests, the difference over 5,000): " + ", ".join(
                      f"{n} {v:,.0f}" for n, v in instructions.items())
                  + f" ({instructions['meridian'] / instructions['nginx']:.2f}× nginx)."]
    write_section("HTTP/2 (h2c) latency at a fixed rate", lines, Path(args.out))


# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# --cpu-split: user and kernel time per request, the plain and the profile-guided build

PGO_BINARY = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "pgo/release/meridian"
SPLIT_PORTS = {"plain": 18401, "pgo": 18402}


def split_ticks(pid):
    """User ticks, system ticks and involuntary context switches of `pid`'s process tree,
    summed over every thread."""
    user = system = switches = 0
    for p in tree_pids(pid):
        for task in Path(f"/proc/{p}/task").iterdir():
            try:
                stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
                status = (task / "status").read_text()
            except OSError:
                continue
            user, system = user + int(stat[11]), system + int(stat[12])
            switches += next(int(l.split()[1]) for l in status.splitlines()
                             if l.startswith("nonvoluntary_ctxt_switches"))
    return user, system, switches


def mode_cpu_split(args, meridian, tmp):
    """The one-core HTTP/1.1 row (one client address) and the full-GeoLite2 row (a random
    client per request), with the proxy's CPU split into user and kernel time: the plain
    build, the profile-guided one (benches/pgo.py) and nginx, interleaved."""
    if not PGO_BINARY.exists():
        sys.exit(f"--cpu-split compares with the profile-guided build: run `python3 benches/pgo.py` first "
                 f"({PGO_BINARY} is missing)")
    reps, seconds, warm = (1, 3, 1) if args.quick else (3, 8, 2)
    builds = {"plain": meridian, "pgo": PGO_BINARY}
    db = geolite2_city()
    backend, nginx, _, conf = http_configs(tmp, 1)
    geo_backend, geo_nginx, geo_conf = geo_configs(tmp, db)
    script = random_client_script(tmp)
    workloads = [
        ("HTTP/1.1 GET, one client address", backend, nginx, conf, HTTP_PORTS, None, HTTP_PORTS["backend"]),
        ("full GeoLite2-City, a random client per request", geo_backend, geo_nginx, geo_conf, GEO_PORTS, script,
         GEO_PORTS["eu-west-1"]),
    ]
    got = {}
    for label, backend_conf, nginx_conf, meridian_conf, ports, wrk_script, backend_port in workloads:
        procs = Procs(tmp)
        try:
            procs.start("backend", [base.nginx_bin(), "-c", str(backend_conf)], [backend_port])
            targets = {}
            for build, binary in builds.items():
                own = write(tmp, f"split-{build}.yaml", meridian_conf.read_text().replace(
                    f"127.0.0.1:{ports['meridian']}", f"127.0.0.1:{SPLIT_PORTS[build]}"))
                procs.start(build, [str(binary), "run", "-c", str(own)], [SPLIT_PORTS[build]])
                targets[build] = SPLIT_PORTS[build]
            procs.start("nginx", [base.nginx_bin(), "-c", str(nginx_conf)], [ports["nginx"]], stop=signal.SIGQUIT)
            targets["nginx"] = ports["nginx"]
            for rep in range(reps):
                for name in base.rotated(list(targets), rep):
                    quiet_enough()
                    wrk_run(targets[name], warm, 50, 1, "0", wrk_script)
                    pid = procs.procs[name].pid
                    before = split_ticks(pid)
                    done = wrk_run(targets[name], seconds, 50, 1, "0", wrk_script)
                    user, system, switches = (b - a for a, b in zip(before, split_ticks(pid)))
                    row = got.setdefault((label, name), {"user": [], "kernel": [], "switches": [], "rps": []})
                    row["user"].append(user / CLK_TCK / done * 1e6)
                    row["kernel"].append(system / CLK_TCK / done * 1e6)
                    row["switches"].append(switches / done)
                    row["rps"].append(done / seconds)
                    print(f"rep {rep + 1} {label}, {name}: user {row['user'][-1]:.2f} µs, kernel "
                          f"{row['kernel'][-1]:.2f} µs per request", flush=True)
        finally:
            procs.stop_all()
    names = {"plain": "meridian, plain build", "pgo": "meridian, profile-guided", "nginx": "nginx"}
    lines = [
        conditions() + f". {versions(meridian)}. Each proxy alone with the backend (nginx, one worker) on CPU 1, "
        "wrk -t1 -c50 alone on CPU 0: the default `meridian run` (so one worker), nginx one worker; the "
        "plain `cargo build --release` and the profile-guided build (`benches/pgo.py`). User and kernel "
        "time are the proxy's whole process tree's, from `/proc/<pid>/task/*/stat`, over the requests "
        f"served; {reps} × {seconds} s after {warm} s, order rotated; medians (min–max). The full-GeoLite2 "
        "workload is `--geo-full`'s (same database, script and decision).",
        "",
        "| workload | proxy | req/s | user µs/request | kernel µs/request | total | × nginx | involuntary switches/request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, *_ in workloads:
        nginx_total = med([u + k for u, k in zip(got[(label, "nginx")]["user"], got[(label, "nginx")]["kernel"])])
        for name in ("plain", "pgo", "nginx"):
            row = got[(label, name)]
            totals = [u + k for u, k in zip(row["user"], row["kernel"])]
            lines.append(f"| {label} | {names[name]} | {med(row['rps']):.0f} | {fmt(row['user'], 2)} | "
                         f"{fmt(row['kernel'], 2)} | {fmt(totals, 2)} | {med(totals) / nginx_total:.2f} | "
                         f"{med(row['switches']):.2f} |")
    lines += ["", "What 0.9 × nginx's CPU per request leaves for user time, at each build's own kernel time:", ""]
    for label, *_ in workloads:
        ng = got[(label, "nginx")]
        nginx_total = med(ng["user"]) + med(ng["kernel"])
        for name in ("plain", "pgo"):
            row = got[(label, name)]
            room = 0.9 * nginx_total - med(row["kernel"])
            lines.append(f"- {label}, {names[name]}: at most {room:.2f} µs of user time against its "
                         f"{med(row['user']):.2f} ({room / med(row['user']):.2f} ×) and nginx's own "
                         f"{med(ng['user']):.2f} ({room / med(ng['user']):.2f} ×).")
    write_section("User and kernel time per request", lines, Path(args.out))



MODES = {"grpc": mode_grpc, "threads": mode_threads, "geo-full": mode_geo_full,
         "tls-handshakes": mode_tls_handshakes, "h2": mode_h2, "cpu-split": mode_cpu_split}


def main():
    ap = argparse.ArgumentParser()
    for mode in MODES:
        ap.add_argument(f"--{mode}", action="store_true")
    ap.add_argument("--binary", help="the meridian binary to measure instead of building one")
    ap.add_argument("--quick", action="store_true", help="one short repetition, for trying it out")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--keep", action="store_true", help="keep the logs and callgrind files (for callgrind_annotate)")
    args = ap.parse_args()
    chosen = [m for m in MODES if getattr(args, m.replace("-", "_"))]
    if not chosen:
        ap.error(f"choose at least one of: {', '.join('--' + m for m in MODES)}")
    base.ensure_tools(oha=False)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    meridian = meridian_binary(args)
    for mode in chosen:
        tmp = tempfile.mkdtemp(prefix=f"meridian-{mode}-")
        try:
            MODES[mode](args, meridian, tmp)
        finally:
            if args.keep:
                print(f"logs and callgrind files kept in {tmp}", flush=True)
            else:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
