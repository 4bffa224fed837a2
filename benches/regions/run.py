#!/usr/bin/env python3
"""The region lab: the reference deployment's three regions on one machine, with wide-area
delays on the wire, and its post-deployment checklist measured (README "Reference deployment,
measured"; results in benches/regions/results.md).

    sudo python3 benches/regions/run.py                 # every scenario, 10-minute availability run
    sudo python3 benches/regions/run.py --availability-seconds 120
    sudo python3 benches/regions/run.py --smoke         # CI: steady state, one region kill, clean up

Run as root (network namespaces). Python 3.11 standard library only, plus iproute2 and a release
build of Meridian (`cargo build --release`: $CARGO_TARGET_DIR or target/, release/meridian;
--meridian to point elsewhere).

Layout: namespaces <prefix>us-east-1, <prefix>eu-west-1, <prefix>ap-southeast-1 and
<prefix>clients, each with a veth into a bridge in <prefix>wan (10.77.0.0/24). Each region
runs two backends (`meridian backend`, naming their region) and its own Meridian, whose config
lists the local backends and the other regions' Meridians (their ingress addresses) as the
remote endpoints traffic spills to. Requests that come from another region's Meridian (they
carry X-Forwarded-For) are served only locally, so spill never loops. Each region's ingress
address is the lab's delay relay (relay.py): it holds every segment for the one-way delay
between the peer's region and this one, with jitter, and hands the connection to the local
Meridian with a PROXY header naming the real client. The clients namespace holds users with
source addresses from the demo GeoIP ranges (US 192.0.2.0/24, DE 198.51.100.0/24,
SG 203.0.113.0/24); they find their region through the DNS step in client.py.

With --prometheus, a regional Prometheus runs in each region with the shipped
docker/prometheus/prometheus.yml and alerts.yml, and a global one in the clients namespace with
the shipped federation.yml; the report adds what the global one sees per edge and region.

Files: topology.py (regions, addresses, delays, SLOs), relay.py (the delay relay), client.py
(the users and the DNS step), report.py (the tables).

Every namespace and process the lab makes is removed when it ends, on error and on signals too.
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import fmt_ms, load_records, pct, report
from topology import (
    CLIENTS_ADDRESS,
    JITTER,
    REGIONS,
    SERVICE,
    SHORT,
    nearest_first,
    one_way_ms,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_BINARY = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release/meridian"

# The GeoDNS peer probes of each region's Meridian (`peer_check`) and the clients' DNS and
# connection timing; the smoke run's bounds are derived from them.
PEER_INTERVAL_S = 1.0
PEER_TIMEOUT_S = 0.5
PEER_UNHEALTHY = 3
PEER_HEALTHY = 2
DNS_TIMEOUT_S = 1.0
MAX_CONNECTION_AGE_S = 5.0


def log(message):
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sh(*args, check=True, quiet=False):
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    if not quiet and result.returncode != 0:
        log(f"(ignored) {' '.join(args)}: {result.stderr.strip()}")
    return result


class Lab:
    def __init__(self, args):
        self.args = args
        self.prefix = args.prefix
        self.binary = Path(args.meridian)
        self.work = Path(tempfile.mkdtemp(prefix="meridian-lab-"))
        self.namespaces = []  # the ones this lab created, removed at the end
        self.processes = {}  # name -> (argv, namespace, Popen)
        self.cleaned = False
        self.delay_kind = "relay"
        self.load_start = os.getloadavg()[0]

    def ns(self, region):
        return self.prefix + region

    # ---------------------------------------------------------------- network

    def build(self):
        if os.geteuid() != 0:
            raise SystemExit("the region lab needs root (network namespaces): run it with sudo")
        if shutil.which("ip") is None:
            raise SystemExit("`ip` is missing: apt-get install iproute2")
        if not self.binary.exists():
            raise SystemExit(
                f"{self.binary} is missing: CARGO_TARGET_DIR={self.binary.parent.parent} "
                "cargo build --release (or --meridian PATH)"
            )
        existing = sh("ip", "netns", "list").stdout.split()
        members = [*REGIONS, "clients"]
        for name in [*members, "wan"]:
            if self.ns(name) in existing:
                raise SystemExit(
                    f"namespace {self.ns(name)} already exists (a lab still running, or one "
                    f"killed with SIGKILL): `ip netns del {self.ns(name)}` if it is stale"
                )
        wan = self.ns("wan")
        self.add_namespace(wan)
        sh("ip", "-n", wan, "link", "add", "wan0", "type", "bridge")
        sh("ip", "-n", wan, "link", "set", "wan0", "up")
        for member in members:
            name = self.ns(member)
            self.add_namespace(name)
            short = SHORT.get(member, "cl")
            # Create the pair inside the hub namespace, then move one end to the member.
            sh("ip", "-n", wan, "link", "add", f"v-{short}", "type", "veth", "peer", "name", "wan")
            sh("ip", "-n", wan, "link", "set", "wan", "netns", name)
            sh("ip", "-n", wan, "link", "set", f"v-{short}", "master", "wan0")
            sh("ip", "-n", wan, "link", "set", f"v-{short}", "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")
            sh("ip", "-n", name, "link", "set", "wan", "up")
        for region, (address, *_rest) in REGIONS.items():
            sh("ip", "-n", self.ns(region), "addr", "add", f"{address}/24", "dev", "wan")
            for other in REGIONS.values():
                sh("ip", "-n", self.ns(region), "route", "add", other[3], "via", CLIENTS_ADDRESS)
        clients = self.ns("clients")
        sh("ip", "-n", clients, "addr", "add", f"{CLIENTS_ADDRESS}/24", "dev", "wan")
        for region in REGIONS.values():
            sh("ip", "-n", clients, "addr", "add", f"{region[4]}/32", "dev", "wan")
        (self.work / "admin-token").write_text("lab-admin-token\n")
        self.delay_kind = self.probe_netem()
        log(f"namespaces up: {', '.join(self.namespaces)}; wide-area delay: {self.delay_kind}")

    def add_namespace(self, name):
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)

    def probe_netem(self):
        """Whether this kernel has netem. The lab adds its delays with its own relay either
        way (the relay keys the delay on the peer's region, which one qdisc per interface
        cannot); the answer is reported so a run says what it used."""
        probe = sh(
            "ip", "netns", "exec", self.ns("clients"),
            "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
            check=False, quiet=True,
        )
        if probe.returncode == 0:
            sh("ip", "netns", "exec", self.ns("clients"), "tc", "qdisc", "del", "dev", "lo",
               "root", check=False, quiet=True)
            return "user-space delay relay (netem is available on this kernel but unused)"
        return "user-space delay relay (no netem on this kernel: " + (
            probe.stderr.strip().splitlines() or ["tc failed"])[0] + ")"

    # ---------------------------------------------------------------- processes

    def spawn(self, name, namespace, argv):
        log_file = open(self.work / f"{name.replace('/', '-')}.log", "ab")
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        self.processes[name] = (argv, namespace, process)
        return process

    def kill(self, name):
        _argv, _namespace, process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, name):
        argv, namespace, process = self.processes[name]
        if process.poll() is None:
            raise RuntimeError(f"{name} is still running")
        self.spawn(name, namespace, argv)

    def wait_in(self, namespace, what, code, timeout=30.0):
        """Run a bounded readiness probe (Python, `code` returns True when ready) inside a
        namespace: poll every 50 ms until it holds or `timeout` passes."""
        program = (
            "import socket,sys,time,urllib.request\n"
            f"deadline=time.monotonic()+{timeout}\n"
            "def ready():\n"
            f"    {code}\n"
            f"for _ in range({int(timeout / 0.05) + 1}):\n"
            "    try:\n"
            "        if ready(): sys.exit(0)\n"
            "    except Exception: pass\n"
            "    if time.monotonic()>deadline: break\n"
            "    time.sleep(0.05)\n"
            "sys.exit(1)\n"
        )
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", program],
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{what} not ready within {timeout}s (logs in {self.work})")

    def meridian_config(self, region):
        geodns = self.args.dns == "geodns"
        lat_lon = "".join(
            f"  {name}: {{ lat: {r[1]}, lon: {r[2]}"
            + (f', ingress: ["{r[0]}"]' if geodns else "") + " }\n"
            for name, r in REGIONS.items()
        )
        endpoints = ""
        for name, r in REGIONS.items():
            if name == region:
                endpoints += f'      {name}: ["127.0.0.1:9001", "127.0.0.1:9002"]\n'
            else:
                # The other region's Meridian, through its ingress (and so the WAN delay).
                endpoints += f'      {name}: ["{r[0]}:80"]\n'
        dns = ""
        if geodns:
            # The GeoDNS listener: A records for the service name, the ingress addresses of the
            # regions the route `api` steers the client to (its own first, then the next, so
            # clients with retries can fall back), dropping a region once its endpoints or its
            # peer are down. The relay forwards <ingress>:53 here with an EDNS Client Subnet
            # option naming the client, believed only from the relay (geo.trusted_proxies).
            # Peers: the other regions' admin /readyz through their ingress (and the WAN delay).
            peers = "".join(
                f'  - {{ region: {name}, url: "http://{r[0]}:9901/readyz" }}\n'
                for name, r in REGIONS.items() if name != region
            )
            ttl = f"{self.args.dns_ttl:g}s"
            label, zone = SERVICE.split(".", 1)
            dns = (
                "geodns:\n"
                '  listen: "127.0.0.1:5353"\n'
                f"  ttl: {ttl}\n"
                f"  failover_ttl: {ttl}\n"
                "  max_answers: 2\n"
                "  client_subnet: trusted\n"
                "  zones:\n"
                f"    - name: {zone}\n"
                f"      ns: [ns1.{zone}]\n"
                f"      soa: {{ rname: hostmaster.{zone} }}\n"
                f"      names: [{{ name: {label}, route: api }}]\n"
                f"peers:\n{peers}"
                f"peer_check: {{ interval: {PEER_INTERVAL_S * 1000:.0f}ms, "
                f"timeout: {PEER_TIMEOUT_S * 1000:.0f}ms, "
                f"unhealthy_threshold: {PEER_UNHEALTHY}, healthy_threshold: {PEER_HEALTHY} }}\n"
            )
        return f"""# Generated by benches/regions/run.py for the lab's {region}.
local_region: {region}
listeners:
  - {{ name: http, bind: "127.0.0.1:8080", proxy_protocol: true }}
admin: {{ bind: "127.0.0.1:9901", token_file: "{self.work / 'admin-token'}" }}
access_log: {{ enabled: false }}
geo:
  database: "{REPO / 'config/geoip/demo-city.mmdb'}"
  trusted_proxies: ["127.0.0.1/32"]     # the ingress relay, which sends a PROXY header
regions:
{lat_lon}clusters:
  api:
    connect_timeout: 500ms
    endpoints:
{endpoints}    outlier_detection: {{ max_ejection_percent: 100 }}
    health_check: {{ path: /healthz, interval: 1s, timeout: 500ms, host: {SERVICE} }}
routes:
  # From another region's Meridian (it adds X-Forwarded-For): serve here, never spill back.
  - name: from-peer
    hosts: ["{SERVICE}"]
    match: {{ headers: [{{ name: x-forwarded-for, present: true }}] }}
    cluster: api
    steering: {{ only: [{region}] }}
    timeout: 3s
  # Other regions' health checks of this Meridian: healthy only while this region's own
  # backends can serve (a spilled check would keep a region whose service is down in their
  # steering and in their GeoDNS answers).
  - name: local-health
    hosts: ["{SERVICE}"]
    match: {{ path_exact: /healthz }}
    cluster: api
    steering: {{ only: [{region}] }}
    timeout: 3s
  - {{ name: api, hosts: ["{SERVICE}"], cluster: api, timeout: 3s }}
{dns}"""

    def relay_spec(self, region):
        address = REGIONS[region][0]
        sources = {}
        for name, r in REGIONS.items():
            sources[r[3]] = name
            sources[f"{r[0]}/32"] = name
        spec = {
            "sources": sources,
            "delays_ms": {name: one_way_ms(name, region) for name in REGIONS},
            "default_ms": REGIONS[region][5],
            "jitter": JITTER,
            "tcp": [{"listen": [address, 80], "target": ["127.0.0.1", 8080],
                     "proxy_protocol": True}],
        }
        if self.args.dns == "geodns":
            spec["udp"] = [{"listen": [address, 53], "target": ["127.0.0.1", 5353],
                            "client_subnet": True}]
            # The admin listener, for the other regions' peer probes (/readyz).
            spec["tcp"].append({"listen": [address, 9901], "target": ["127.0.0.1", 9901]})
        return spec

    def start_region(self, region, backends=True, meridian=True):
        ns = self.ns(region)
        if not self.processes.get(f"{region}/relay"):
            config = self.work / f"meridian-{region}.yaml"
            config.write_text(self.meridian_config(region))
            check = sh(str(self.binary), "check", "-c", str(config), check=False)
            if check.returncode != 0:
                raise RuntimeError(f"generated config for {region}: {check.stdout}{check.stderr}")
            for port in (9001, 9002):
                self.spawn(f"{region}/backend-{port}", ns, [
                    str(self.binary), "backend", "--region", region,
                    "--listen", f"127.0.0.1:{port}"])
            self.spawn(f"{region}/meridian", ns, [
                str(self.binary), "run", "-c", str(config), "--worker-threads", "1"])
            self.spawn(f"{region}/relay", ns, [
                sys.executable, str(HERE / "relay.py"), json.dumps(self.relay_spec(region))])
            self.wait_region(region, backends, meridian)
        else:
            # Backends first, then Meridian, then the ingress: clients reach the region only
            # once it can answer.
            if backends:
                for port in (9001, 9002):
                    self.restart(f"{region}/backend-{port}")
                self.wait_region(region, backends=True, meridian=False)
            if meridian:
                self.restart(f"{region}/meridian")
                self.wait_in(ns, f"{region} meridian", "return urllib.request.urlopen("
                             "'http://127.0.0.1:9901/readyz',timeout=1).status==200")
                self.restart(f"{region}/relay")
                self.wait_in(ns, f"{region} ingress", "return socket.create_connection(("
                             f"'{REGIONS[region][0]}',80),timeout=1).close() is None")

    def start_all(self):
        for region in REGIONS:
            self.start_region(region)
        for region in REGIONS:
            self.wait_all_healthy(region)

    def region_processes(self, region, backends=True, meridian=True):
        names = []
        if backends:
            names += [f"{region}/backend-9001", f"{region}/backend-9002"]
        if meridian:
            names += [f"{region}/meridian", f"{region}/relay"]
        return names

    def wait_region(self, region, backends=True, meridian=True):
        ns = self.ns(region)
        if backends:
            self.wait_in(ns, f"{region} backends", "return all(socket.create_connection(("
                         "'127.0.0.1',p),timeout=1).close() is None for p in (9001,9002))")
        if meridian:
            self.wait_in(ns, f"{region} meridian", "return urllib.request.urlopen("
                         "'http://127.0.0.1:9901/readyz',timeout=1).status==200")
            self.wait_in(ns, f"{region} ingress", "return socket.create_connection(("
                         f"'{REGIONS[region][0]}',80),timeout=1).close() is None")

    def wait_all_healthy(self, region, timeout=30.0):
        """Until this region's Meridian counts every endpoint healthy, its own backends and the
        other regions' Meridians (its /clusters)."""
        self.wait_in(
            self.ns(region), f"{region}: every endpoint healthy",
            "import json; c=json.load(urllib.request.urlopen(urllib.request.Request("
            "'http://127.0.0.1:9901/clusters',headers={'authorization':'Bearer lab-admin-token'}),"
            "timeout=1)); return all(r['healthy_share']==1 for r in c['clusters'][0]['regions'])",
            timeout,
        )

    def stop_region(self, region, backends=True, meridian=True):
        for name in self.region_processes(region, backends, meridian):
            self.kill(name)

    # ---------------------------------------------------------------- prometheus

    def start_prometheus(self):
        """A regional Prometheus in each region (the shipped prometheus.yml and alerts.yml,
        scraping that region's Meridian every second) and a global one in the clients
        namespace federating them with the shipped federation.yml."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise SystemExit("`prometheus` is missing: apt-get install prometheus")
        shipped = (REPO / "docker/prometheus/prometheus.yml").read_text()
        federation = "global:\n  scrape_interval: 1s\n" + (
            REPO / "docker/prometheus/federation.yml").read_text()
        for region, r in REGIONS.items():
            config = shipped
            for old, new in (
                ("scrape_interval: 15s", "scrape_interval: 1s\n  evaluation_interval: 1s"),
                ("edge_region: us-east-1", f"edge_region: {region}"),
                ("/etc/prometheus/alerts.yml", str(REPO / "docker/prometheus/alerts.yml")),
                ("/etc/prometheus/admin-token", str(self.work / "admin-token")),
                ("meridian:9901", "127.0.0.1:9901"),
            ):
                if old not in config:
                    raise RuntimeError(f"docker/prometheus/prometheus.yml lacks `{old}`")
                config = config.replace(old, new)
            self.run_prometheus(binary, region, self.ns(region), f"{r[0]}:9090", config)
            target = f"prometheus.{region}.example.internal:9090"
            if target not in federation:
                raise RuntimeError(f"docker/prometheus/federation.yml lacks `{target}`")
            federation = federation.replace(target, f"{r[0]}:9090")
        self.run_prometheus(binary, "global", self.ns("clients"), f"{CLIENTS_ADDRESS}:9090",
                            federation)

    def run_prometheus(self, binary, name, namespace, listen, config):
        path = self.work / f"prometheus-{name}.yml"
        path.write_text(config)
        self.spawn(f"prometheus-{name}", namespace, [
            binary, f"--config.file={path}", f"--storage.tsdb.path={self.work / ('tsdb-' + name)}",
            f"--web.listen-address={listen}"])
        self.wait_in(namespace, f"prometheus {name}", "return urllib.request.urlopen("
                     f"'http://{listen}/-/ready',timeout=1).status==200", timeout=60)

    def federated(self, query):
        """`query` on the global Prometheus: its result vector."""
        program = (
            "import json,sys,urllib.parse,urllib.request\n"
            f"u='http://{CLIENTS_ADDRESS}:9090/api/v1/query?query='+urllib.parse.quote(sys.argv[1])\n"
            "print(json.dumps(json.load(urllib.request.urlopen(u,timeout=5))['data']['result']))\n"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", self.ns("clients"), sys.executable, "-c", program, query],
            capture_output=True, text=True, timeout=20,
        )
        if out.returncode != 0:
            raise RuntimeError(f"global Prometheus query failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    # ---------------------------------------------------------------- clients

    def start_clients(self, out, duration, workers, rate):
        spec = {
            "out": str(out),
            "duration": duration,
            "rate": rate,
            "timeout": 2.0,
            "attempts": 3,
            "max_connection_age": MAX_CONNECTION_AGE_S,
            "dns_timeout": DNS_TIMEOUT_S,
            "dns_down_ttl": self.args.dns_down_ttl,
            "name": SERVICE,
            "dns": self.args.dns,
            # The static DNS step: each client region's own ingress first, then the nearest.
            "static_answers": {
                region: [REGIONS[r][0] for r in nearest_first(region)] for region in REGIONS
            },
            "dns_servers": {
                region: [[REGIONS[r][0], 53] for r in nearest_first(region)] for region in REGIONS
            },
            "workers": workers,
        }
        return self.spawn("clients", self.ns("clients"), [
            sys.executable, str(HERE / "client.py"), json.dumps(spec)])

    # ---------------------------------------------------------------- cleanup

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        for name, (_argv, _ns, process) in list(self.processes.items()):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{name} did not exit")
        for namespace in reversed(self.namespaces):
            # Anything still inside a namespace this lab made is the lab's own.
            pids = sh("ip", "netns", "pids", namespace, check=False, quiet=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", namespace, check=False)
        self.namespaces.clear()
        if self.args.keep_logs:
            log(f"logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        log("cleaned up: namespaces and processes removed")


# -------------------------------------------------------------------- scenarios


def workers_for(regions, modes):
    return [{"region": r, "source": REGIONS[r][4], "mode": m} for r in regions for m in modes]


def run_smoke(lab, args):
    """CI's short lab: steady state, then one kill and restore of us-east-1, through GeoDNS."""
    started = time.monotonic()
    lab.start_all()
    failures = smoke_steady(lab)
    failures += smoke_region_kill(lab, args)
    log(f"smoke wall time {time.monotonic() - started:.1f} s (lab built and started included)")
    return failures


def smoke_steady(lab):
    out = lab.work / "smoke.jsonl"
    # 50 requests per client region, plus a US client sent to eu-west-1's ingress directly to
    # measure the US-EU path. Its X-Forwarded-For makes eu-west-1 serve it locally (the route
    # for requests from other regions' Meridians), so it crosses the ocean once each way.
    workers = workers_for(REGIONS, ["noretry"])
    workers.append({"region": "us-east-1", "source": REGIONS["us-east-1"][4],
                    "mode": "noretry", "answers": [REGIONS["eu-west-1"][0]],
                    "headers": {"X-Forwarded-For": REGIONS["us-east-1"][4]}})
    for w in workers:
        w["max_requests"] = 50
    clients = lab.start_clients(out, duration=20, workers=workers, rate=10)
    clients.wait(timeout=60)
    records = load_records(out)
    failures = []
    for region in REGIONS:
        rs = [r for r in records if r["client"] == region and not r.get("direct")]
        served = {r["served"] for r in rs}
        errors = [r for r in rs if not r["ok"]]
        p50 = pct([r["ms"] for r in rs if r["ok"]], 50)
        log(f"{region}: {len(rs)} requests, served by {sorted(served)}, P50 {fmt_ms(p50)} ms, "
            f"{len(errors)} errors")
        if len(rs) != 50 or errors or served != {region}:
            failures.append(f"{region}: {len(rs)} requests, {len(errors)} errors, "
                            f"served by {sorted(served)} (want 50, 0, [{region}])")
    direct = [r for r in records if r.get("direct")]
    lat = [r["ms"] for r in direct if r["ok"]]
    log(f"us-east-1 -> eu-west-1 ingress: {len(lat)} answers, min {fmt_ms(min(lat, default=0))}"
        f" ms, P50 {fmt_ms(pct(lat, 50))} ms (one-way delay {one_way_ms('us-east-1', 'eu-west-1')}"
        " ms each way)")
    round_trip = 2 * one_way_ms("us-east-1", "eu-west-1") * (1 - JITTER)
    served = sorted({r["served"] for r in direct})
    if len(lat) != 50 or served != ["eu-west-1"]:
        failures.append(f"us-east-1 -> eu-west-1: {len(lat)} answers of 50, served by {served}")
    elif min(lat) < round_trip:
        failures.append(f"us-east-1 -> eu-west-1 took {min(lat):.1f} ms, under the "
                        f"{round_trip:.0f} ms round trip: the WAN delay was not applied")
    return failures


# Scheduling slack on top of the bounds below: the loaded 2-core CI machine runs the three
# regions, the relays and the clients (paced at 10 requests/s, so an answer is seen up to
# 0.1 s late), and a restarted region's Meridian takes its first health checks.
SMOKE_SLACK_S = 3.0
# Requests each US user completes after its DNS step during the outage before the region
# returns, so the outage window holds answers taken from eu-west-1's GeoDNS answer.
SMOKE_AFTER_RESOLVE = 10


def smoke_failover_bound(args):
    """Seconds from the kill until a US user without retries is answered from eu-west-1, at
    worst: eu-west-1's Meridian marks the us-east-1 peer down after PEER_UNHEALTHY probes (one
    per interval, each refused at once; the timeout counted once for safety); an answer its
    GeoDNS gave just before still names us-east-1 first and is cached for the TTL; the user's
    next DNS step asks us-east-1's dead name server first and waits out its timeout."""
    detection = PEER_UNHEALTHY * PEER_INTERVAL_S + PEER_TIMEOUT_S
    return detection + args.dns_ttl + DNS_TIMEOUT_S + SMOKE_SLACK_S


def smoke_restore_bound(args):
    """Seconds from us-east-1 answering again until US users are served there, at worst: their
    resolvers remember us-east-1's name server as down, so they ask eu-west-1's, which names
    us-east-1 first again once its peer probes pass PEER_HEALTHY times; a failover answer
    (failover_ttl, --dns-ttl here) taken just before that is still cached when the keep-alive
    connection to eu-west-1 ages out, so the next DNS step comes one connection age later."""
    recovery = PEER_HEALTHY * PEER_INTERVAL_S + PEER_TIMEOUT_S
    return recovery + args.dns_ttl + MAX_CONNECTION_AGE_S + SMOKE_SLACK_S


def wait_records(path, until, bound):
    """Poll the clients' records every 100 ms until `until(records)` holds or `bound` seconds
    pass: (records, whether it held)."""
    deadline = time.monotonic() + bound
    records = []
    for _ in range(int(bound / 0.1) + 2):
        records = load_records(path) if path.exists() else []
        if until(records):
            return records, True
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return records, False


def answered_at(r):
    return r["t"] + r["ms"] / 1000


def first_served(records, mode, region, since):
    """Seconds from `since` to the first answer served by `region` to the US user `mode`
    (a request started at or after `since`), or None."""
    done = [answered_at(r) for r in records
            if r["mode"] == mode and r["ok"] and r["served"] == region and r["t"] >= since]
    return min(done) - since if done else None


def smoke_region_kill(lab, args):
    """us-east-1 killed (backends, Meridian, ingress relay), then restored, with one US user
    without retries and one with, resolving through the regions' GeoDNS."""
    us, eu = "us-east-1", "eu-west-1"
    modes = ("noretry", "retry")
    out = lab.work / "smoke-kill.jsonl"
    failover_bound, restore_bound = smoke_failover_bound(args), smoke_restore_bound(args)
    ready_bound, down_bound = 20.0, failover_bound + MAX_CONNECTION_AGE_S + 2 * SMOKE_SLACK_S
    # A cap only: the clients are stopped once the region is back.
    duration = ready_bound + down_bound + 30 + restore_bound
    lab.start_clients(out, duration=duration, workers=workers_for([us], modes), rate=10)
    failures = []

    # Both users answered at home first.
    _, ready = wait_records(
        out, lambda rs: all(first_served(rs, m, us, 0) is not None for m in modes), ready_bound)
    if not ready:
        lab.kill("clients")
        return [f"region kill: US users not answered by us-east-1 within {ready_bound:.0f} s "
                "before the kill"]
    t_kill = time.time()
    lab.stop_region(us)
    log("region kill: us-east-1's backends, Meridian and ingress killed")

    def resolved_after_kill(rs, mode):
        """The US user's DNS answers taken after the kill, with the requests completed since
        the first one led by eu-west-1's ingress."""
        dns = [r for r in rs if r["mode"] == mode and r["t"] >= t_kill and r.get("resolved")
               and r["resolved"][0] == REGIONS[eu][0]]
        if not dns:
            return None, 0
        since = min(r["t"] for r in dns)
        return dns[0]["resolved"], sum(1 for r in rs if r["mode"] == mode and r["t"] > since)

    def failed_over(rs):
        return all(first_served(rs, m, eu, t_kill) is not None
                   and resolved_after_kill(rs, m)[1] >= SMOKE_AFTER_RESOLVE for m in modes)

    records, _ = wait_records(out, failed_over, down_bound)
    t_restore_begin = time.time()
    lab.start_region(us)
    t_restore = time.time()  # Meridian ready and ingress open again
    log(f"region restore: us-east-1 answering again ({t_restore - t_restore_begin:.1f} s to "
        "restart it)")
    records, _ = wait_records(
        out, lambda rs: all(first_served(rs, m, us, t_restore) is not None for m in modes),
        restore_bound + 1)
    lab.kill("clients")
    records = load_records(out)

    labels = {"noretry": "without retries", "retry": "with retries"}
    for mode in modes:
        label = labels[mode]
        down = [r for r in records if r["mode"] == mode and t_kill <= r["t"] < t_restore_begin]
        errors = sum(1 for r in down if not r["ok"])
        took = first_served(records, mode, eu, t_kill)
        answer, _ = resolved_after_kill(records, mode)
        settled = [r for r in down if took is not None and r["t"] >= t_kill + took]
        late_errors = sum(1 for r in settled if not r["ok"] or r["served"] != eu)
        log(f"region kill: US users {label}: first answer from eu-west-1 "
            f"{'never' if took is None else f'{took:.2f} s'} after the kill (bound "
            f"{failover_bound:.1f} s), GeoDNS answer after the kill "
            f"{' '.join(answer) if answer else 'none led by eu-west-1'}, "
            f"{errors} errors of {len(down)} while down, {late_errors} not from eu-west-1 after")
        if took is None or took > failover_bound:
            failures.append(f"region kill: US users {label} first answered by eu-west-1 after "
                            f"{'never' if took is None else f'{took:.2f} s'}, bound "
                            f"{failover_bound:.1f} s")
        if answer is None:
            failures.append(f"region kill: US users {label} got no GeoDNS answer led by "
                            "eu-west-1 while us-east-1 was down")
        if late_errors:
            failures.append(f"region kill: US users {label}: {late_errors} requests failed or "
                            "were not served by eu-west-1 after the failover")
        if mode == "retry" and errors:
            failures.append(f"region kill: US users with retries saw {errors} errors while "
                            "us-east-1 was down (want 0)")
        back = [r for r in records if r["mode"] == mode and r["t"] >= t_restore_begin]
        back_errors = sum(1 for r in back if not r["ok"])
        took = first_served(records, mode, us, t_restore)
        log(f"region restore: US users {label} back in us-east-1 "
            f"{'never' if took is None else f'{took:.2f} s'} after the restore (bound "
            f"{restore_bound:.1f} s), {back_errors} errors of {len(back)}")
        if took is None or took > restore_bound:
            failures.append(f"region restore: US users {label} back in us-east-1 after "
                            f"{'never' if took is None else f'{took:.2f} s'}, bound "
                            f"{restore_bound:.1f} s")
        if mode == "retry" and back_errors:
            failures.append(f"region restore: US users with retries saw {back_errors} errors")
    return failures


def run_full(lab, args):
    out = lab.work / "full.jsonl"
    lab.start_all()
    if args.prometheus:
        lab.start_prometheus()
    steady_s, event_s, recover_s = args.steady_seconds, args.event_seconds, args.recover_seconds
    availability_s = args.availability_seconds
    total = steady_s + 2 * (event_s + recover_s) + availability_s + 60
    lab.start_clients(out, duration=total, workers=workers_for(REGIONS, ["noretry", "retry"]),
                      rate=args.rate)
    marks = {}
    t0 = time.time()
    log(f"steady state for {steady_s} s")
    time.sleep(steady_s)  # measuring window, not synchronisation
    marks["steady"] = (t0, time.time())

    log("service down: us-east-1's backends killed")
    marks["service_down"] = time.time()
    lab.stop_region("us-east-1", meridian=False)
    time.sleep(event_s)
    lab.start_region("us-east-1", meridian=False)
    marks["service_restore"] = time.time()  # backends answering again
    log("service restored")
    time.sleep(recover_s)

    log("region down: us-east-1's backends, Meridian and ingress killed")
    marks["region_down"] = time.time()
    lab.stop_region("us-east-1")
    time.sleep(event_s)
    lab.start_region("us-east-1")
    marks["region_restore"] = time.time()  # Meridian ready, ingress open
    log("region restored")
    time.sleep(recover_s)

    log(f"availability: {availability_s} s, us-east-1 killed and restored twice")
    a_start = time.time()
    quarter = availability_s / 5
    for k in range(2):
        time.sleep(quarter)
        lab.stop_region("us-east-1")
        log(f"availability: region down ({k + 1})")
        time.sleep(quarter)
        lab.start_region("us-east-1")
        log(f"availability: region restored ({k + 1})")
    time.sleep(max(0.0, a_start + availability_s - time.time()))
    a_end = time.time()
    lab.kill("clients")
    records = load_records(out)
    return report(lab, args, records, marks, (a_start, a_end))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="build the lab, check steady state, kill and restore us-east-1 "
                             "(through GeoDNS), clean up (CI)")
    parser.add_argument("--meridian", default=str(DEFAULT_BINARY), help="release binary")
    parser.add_argument("--prefix", default="mlab-", help="namespace name prefix")
    parser.add_argument("--dns", choices=["static", "geodns"],
                        help="the DNS step: static answers per client region (the default), or "
                             "A queries to each region's Meridian GeoDNS listener at "
                             "<ingress>:53 (own region's first), answers cached for their TTL "
                             "(the default and only choice with --smoke)")
    parser.add_argument("--dns-ttl", type=float, default=5.0,
                        help="with --dns geodns: the listener's ttl and failover_ttl, seconds")
    parser.add_argument("--dns-down-ttl", type=float, default=900.0,
                        help="with --dns geodns: how long a client asks a name server that "
                             "timed out last, seconds (unbound's infra-host-ttl default; 0: "
                             "always ask in order, own region's first)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s per client")
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--event-seconds", type=float, default=20.0)
    parser.add_argument("--recover-seconds", type=float, default=15.0)
    parser.add_argument("--availability-seconds", type=float, default=600.0)
    parser.add_argument("--prometheus", action="store_true",
                        help="run the shipped Prometheus configs: one per region, a global one "
                             "federating them; report what the global one sees")
    parser.add_argument("--results", help="write the tables to this Markdown file")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    if args.smoke and args.dns == "static":
        parser.error("--smoke checks the region kill through GeoDNS: drop --dns static")
    args.dns = args.dns or ("geodns" if args.smoke else "static")

    lab = Lab(args)
    atexit.register(lab.cleanup)

    def on_signal(signum, _frame):
        lab.cleanup()
        sys.exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        lab.build()
        if args.smoke:
            failures = run_smoke(lab, args)
        else:
            text = run_full(lab, args)
            failures = []
            if args.results:
                Path(args.results).write_text(text)
    finally:
        lab.cleanup()
    left = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith(args.prefix)]
    if left:
        failures = [*failures, f"namespaces left behind: {left}"]
    if failures:
        for failure in failures:
            print(f"FAIL: {failure}", file=sys.stderr)
        sys.exit(1)
    log("ok")


if __name__ == "__main__":
    main()
