#!/usr/bin/env python3
"""Meridian's GeoDNS side by side with gdnsd (Debian's package, geoip plugin).

    python3 benches/dns/run.py            # answers table + 3 interleaved rounds of 10 s each
    python3 benches/dns/run.py --quick    # 1 round of 3 s, for trying it out
    python3 benches/dns/run.py --no-write # print the tables, leave results.md alone

Both servers get the same GeoIP database (config/geoip/demo-city.mmdb) and the same region
map: three regions with the same coordinates, Europe ordered [eu-west-1, us-east-1,
ap-southeast-1], everything else by great-circle distance, us-east-1 for clients without a
location (Meridian's local_region, the first of gdnsd's datacenters).

1. Answers: `dig www.example.com A +subnet=…` against each for the same client subnets; the
   table gives the address (region) and the ECS scope each returns, and why where they differ.
2. Queries per second: dnsperf (UDP, 100 queries outstanding, the EDNS Client Subnet option of
   198.51.100.0/24 on every query, -E 8:…) on CPU 0; the server alone on CPU 1 (taskset), gdnsd
   with one UDP thread, Meridian with one worker thread. Rounds interleave the two servers;
   medians. CPU per query is (utime + stime) of the server from /proc over the queries answered.

Installs gdnsd, dnsperf and bind9-dnsutils with apt-get when missing; builds nothing: it uses
target/release/meridian, or $MERIDIAN_BIN. Writes its configs into a temporary directory,
kills what it started (on errors too) and rewrites the "GeoDNS against gdnsd" section of
benches/load/results.md. Not part of `cargo test`.
"""
import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB = ROOT / "config" / "geoip" / "demo-city.mmdb"
RESULTS = ROOT / "benches" / "load" / "results.md"
SECTION = "## GeoDNS against gdnsd"
LOADGEN_CPU, SERVER_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEADLINE_S = 900  # the whole run, whatever happens

REGIONS = {  # name: (lat, lon, ingress A)
    "us-east-1": (38.9, -77.4, "192.0.2.10"),
    "eu-west-1": (53.3, -6.3, "198.51.100.10"),
    "ap-southeast-1": (1.35, 103.8, "203.0.113.10"),
}
BY_ADDRESS = {v[2]: k for k, v in REGIONS.items()}
DEFAULT_ORDER = ["us-east-1", "eu-west-1", "ap-southeast-1"]
EU_ORDER = ["eu-west-1", "us-east-1", "ap-southeast-1"]
BENCH_SUBNET = "198.51.100.0/24"

# (client subnet or None for no ECS option, what the demo database says about it)
SUBNETS = [
    ("198.51.100.0/24", "DE (Frankfurt), EU"),
    ("198.51.100.77/32", "DE, EU"),
    ("198.51.100.128/25", "DE, EU"),
    ("198.51.0.0/16", "not in the database (address 198.51.0.0)"),
    ("203.0.113.0/24", "SG, AS"),
    ("203.0.113.200/29", "SG, AS"),
    ("203.0.112.0/23", "not in the database (address 203.0.112.0)"),
    ("192.0.2.0/24", "US (Ashburn), NA"),
    ("192.0.2.64/26", "US, NA"),
    ("2001:db8:1::/48", "JP (Tokyo), AS"),
    ("2001:db8:1:42::/64", "JP, AS"),
    ("2001:db8:2::/48", "BR (São Paulo), SA"),
    ("2001:db8:2:ff00::/56", "BR, SA"),
    ("2001:db8:3::/48", "FR (Paris), EU"),
    ("2001:db8:3::/64", "FR, EU"),
    ("2001:db8::/32", "not in the database (address 2001:db8::)"),
    ("2600::/32", "not in the database"),
    ("8.8.8.0/24", "not in the database"),
    ("10.0.0.0/8", "private, not in the database"),
    ("100.64.0.0/10", "shared address space, not in the database"),
    ("2002:c633:6400::/40", "6to4 address of 198.51.100.0 (DE)"),
    ("::ffff:198.51.100.0/120", "IPv4-mapped 198.51.100.0 (DE)"),
    ("2001:0:4136:e378:8000:63bf:39cc:9bfa/128", "Teredo client 198.51.100.5 (DE)"),
    ("0.0.0.0/0", "source prefix 0: no client address"),
    (None, "no ECS option: the resolver's address 127.0.0.1"),
]

# Why the two answer differently, for the rows where they do (from the runs; a row that
# differs and is not here says so in the table).
REASONS = {
    "::ffff:198.51.100.0/120": "same region; Meridian's scope 56 is too wide: it locates the IPv4 address inside "
                               "but sets the scope from the IPv4 /24 against the IPv6 /56, so the answer claims "
                               "::/56, every IPv4-mapped client; gdnsd's 120 is right",
    "2001:0:4136:e378:8000:63bf:39cc:9bfa/128": "gdnsd decodes the Teredo client's IPv4 address (the last 32 bits, "
                                                "inverted) and locates that; Meridian looks the address up as it is: "
                                                "the database leads 6to4 and IPv4-mapped addresses to their IPv4 "
                                                "network, not Teredo ones, so no location and local_region",
}
SCOPE_NOTE = ("the same region, another ECS scope. gdnsd merges neighbouring networks that get "
              "the same answer into one (everything around 192.0.2.0/24 goes to us-east-1, so it says /6; an "
              "address in no network gets the widest such block, /1) and may return a scope longer than was "
              "sent (/18 for a /16 whose first /18 holds no network); Meridian returns the longer of the "
              "database network and the /24 (/56) its weighted draws read, never longer than was sent. Both "
              "are valid RFC 7871 scopes; gdnsd's wider ones let resolvers cache more.")

children = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def start(cmd, logfile, **kw):
    f = open(logfile, "ab")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    children.append(p)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
    if p in children:
        children.remove(p)


def stop_all(*_):
    for p in list(children):
        stop(p)


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def ensure_tools():
    missing = [pkg for prog, pkg in (("gdnsd", "gdnsd"), ("dnsperf", "dnsperf"), ("dig", "bind9-dnsutils"))
               if shutil.which(prog) is None]
    if missing:
        log(f"installing {' '.join(missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, timeout=300, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, timeout=600, env=env)
    # Installing may start Debian's own gdnsd service on port 53: not ours; ours use free ports.


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def meridian_config(tmp, port):
    regions = "\n".join(f"  {n}: {{ lat: {la}, lon: {lo}, ingress: [{a}] }}" for n, (la, lo, a) in REGIONS.items())
    # Never contacted (no health checks, no HTTP traffic): DNS answers only need them present.
    endpoints = ", ".join(f"{n}: [\"127.0.0.{i + 1}:9\"]" for i, n in enumerate(REGIONS))
    text = f"""local_region: us-east-1
listeners: [{{ name: http, bind: "127.0.0.1:0" }}]
access_log: {{ enabled: false }}
geo:
  database: {DB}
regions:
{regions}
clusters:
  web:
    endpoints: {{ {endpoints} }}
routes:
  - name: web
    hosts: ["*"]
    cluster: web
    steering:
      mode: nearest
      continents: {{ EU: [{", ".join(EU_ORDER)}] }}
geodns:
  listen: "127.0.0.1:{port}"
  ttl: 30s
  max_answers: 1
  zones:
    - name: example.com
      ns: [ns1.example.com, ns2.example.com]
      soa: {{ rname: hostmaster.example.com, serial: 2026120501 }}
      names:
        - {{ name: www, route: web }}
"""
    path = tmp / "meridian.yaml"
    path.write_text(text)
    return path


def gdnsd_config(tmp, port):
    d = tmp / "gdnsd"
    for sub in ("zones", "geoip", "run", "state"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    coords = "\n".join(f"          {n} => [{la}, {lo}]," for n, (la, lo, _) in REGIONS.items())
    dcmap = "\n".join(f"          {n} => {a}," for n, (_, _, a) in REGIONS.items())
    (d / "config").write_text(f"""options => {{
  listen => [ 127.0.0.1:{port} ]
  udp_threads => 1
  tcp_threads => 1
  run_dir => {d / "run"}
  state_dir => {d / "state"}
}}
plugins => {{
  geoip => {{
    maps => {{
      regions => {{
        geoip2_db => {DB},
        datacenters => [{", ".join(DEFAULT_ORDER)}],
        auto_dc_coords => {{
{coords}
        }},
        map => {{ EU => [{", ".join(EU_ORDER)}] }}
      }}
    }},
    resources => {{
      www => {{
        map => regions,
        dcmap => {{
{dcmap}
        }}
      }}
    }}
  }}
}}
""")
    (d / "zones" / "example.com").write_text("""$TTL 900
@ SOA ns1 hostmaster 2026120501 7200 1800 259200 900
@ NS ns1
@ NS ns2
ns1 A 192.0.2.1
ns2 A 192.0.2.2
www 30 DYNA geoip!www
""")
    return d


def dig(port, subnet, timeout=3):
    args = ["dig", "@127.0.0.1", "-p", str(port), "www.example.com", "A", "+tries=1", f"+time={timeout}",
            "+nocmd", "+nostats"]
    if subnet:
        args.append(f"+subnet={subnet}")
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 5).stdout
    status = re.search(r"status: (\w+)", out)
    addrs = re.findall(r"^www\.example\.com\.\s+(\d+)\s+IN\s+A\s+(\S+)", out, re.M)
    scope = re.search(r"CLIENT-SUBNET: \S+/(\d+)/(\d+)", out)
    return {
        "status": status.group(1) if status else "no answer",
        "ttl": addrs[0][0] if addrs else "",
        "addrs": [a for _, a in addrs],
        "scope": scope.group(2) if scope else ("–" if subnet else "none"),
    }


def wait_answering(port, proc, what, deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if dig(port, None, timeout=1)["status"] == "NOERROR":
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} is not answering on 127.0.0.1:{port}")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def ecs_hex(subnet):
    addr, plen = subnet.split("/")
    plen = int(plen)
    raw = socket.inet_aton(addr)[: (plen + 7) // 8]
    return "0001" + f"{plen:02x}" + "00" + raw.hex()


def dnsperf(port, seconds, tmp, clients=1, outstanding=100):
    qfile = tmp / "queries.txt"
    qfile.write_text("www.example.com A\n")
    cmd = ["taskset", "-c", LOADGEN_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
           "-l", str(seconds), "-c", str(clients), "-T", "1", "-q", str(outstanding), "-t", "2", "-E", f"8:{ecs_hex(BENCH_SUBNET)}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    completed = re.search(r"Queries completed:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    if not (completed and qps):
        raise RuntimeError(f"dnsperf output not understood:\n{out}")
    return int(completed.group(1)), int(lost.group(1)) if lost else 0, float(qps.group(1))


def region(addrs):
    return ", ".join(f"{BY_ADDRESS.get(a, a)}" for a in addrs) or "–"


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def med_range(xs, fmt="{:.0f}"):
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def with_section(old, text):
    """`old` with its SECTION (up to the next `## ` heading) replaced by `text`, or appended."""
    start_i = old.find(SECTION + "\n")
    if start_i < 0:
        return old.rstrip("\n") + "\n\n" + text
    end_i = old.find("\n## ", start_i + len(SECTION))
    return old[:start_i] + text + ("\n" + old[end_i + 1:] if end_i >= 0 else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--no-write", action="store_true", help="do not rewrite benches/load/results.md")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 3
    if os.cpu_count() is None or os.cpu_count() < 2:
        sys.exit("needs 2 CPUs (dnsperf on CPU 0, the server on CPU 1)")
    meridian = Path(os.environ.get("MERIDIAN_BIN", ROOT / "target" / "release" / "meridian"))
    if not meridian.exists():
        sys.exit(f"{meridian} missing: cargo build --release first (or set MERIDIAN_BIN)")
    ensure_tools()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(DEADLINE_S)
    tmp = Path(tempfile.mkdtemp(prefix="meridian-dnsbench-"))
    try:
        ports = {"meridian": free_port(), "gdnsd": free_port()}
        mcfg = meridian_config(tmp, ports["meridian"])
        gdir = gdnsd_config(tmp, ports["gdnsd"])
        subprocess.run([str(meridian), "check", "-c", str(mcfg)], check=True, timeout=30,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["gdnsd", "-c", str(gdir), "checkconf"], check=True, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cmds = {
            "meridian": ["taskset", "-c", SERVER_CPU, str(meridian), "run", "-c", str(mcfg), "--worker-threads", "1"],
            "gdnsd": ["taskset", "-c", SERVER_CPU, "gdnsd", "-c", str(gdir), "start"],
        }

        # 1. Answers, both servers up at once.
        procs = {name: start(cmd, tmp / f"{name}.log") for name, cmd in cmds.items()}
        for name, p in procs.items():
            wait_answering(ports[name], p, name)
        rows = []
        for subnet, where in SUBNETS:
            m, g = dig(ports["meridian"], subnet), dig(ports["gdnsd"], subnet)
            same_addr = m["addrs"] == g["addrs"] and m["status"] == g["status"]
            if same_addr and m["scope"] == g["scope"]:
                why = "same"
            elif subnet in REASONS:
                why = REASONS[subnet]
            elif same_addr:
                why = "scope only (a)"
            else:
                why = "differs, not explained yet"
            rows.append((subnet or "(none)", where, m, g, why))
        for p in procs.values():
            stop(p)

        # 2. Throughput, one server at a time, interleaved.
        runs = {"meridian": [], "gdnsd": []}
        order = ["meridian", "gdnsd"]
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                p = start(cmds[name], tmp / f"{name}.log")
                try:
                    wait_answering(ports[name], p, name)
                    dnsperf(ports[name], 1, tmp)  # warm-up
                    c0 = cpu_seconds(p.pid)
                    done, lost, qps = dnsperf(ports[name], args.seconds, tmp)
                    cpu = cpu_seconds(p.pid) - c0
                finally:
                    stop(p)
                runs[name].append({"qps": qps, "lost": lost, "cpu_us": cpu / max(done, 1) * 1e6,
                                   "cpu_share": cpu / args.seconds})
                log(f"round {r + 1} {name}: {qps:.0f} qps, {lost} lost, {cpu / max(done, 1) * 1e6:.2f} µs CPU/query")
    finally:
        signal.alarm(0)
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    load = os.getloadavg()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mver = version([str(meridian), "--version"])
    gver = next((l.strip() for l in subprocess.run(["gdnsd", "-h"], capture_output=True, text=True,
                                                   timeout=10).stderr.splitlines() if "version" in l), "gdnsd")
    pver = "dnsperf " + subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "dnsperf"], capture_output=True,
                                       text=True, timeout=10).stdout.strip()

    lines = [SECTION, ""]
    lines.append(
        f"Measured {when} on {os.cpu_count()} cores ({cpu}, Linux {platform.release()}); load average "
        f"{load[0]:.1f} / {load[1]:.1f} (1 / 5 min) when the table was written, from other work on the machine, "
        f"so the rounds interleave the servers and the CPU per query is given beside the rate. {mver} "
        f"(`cargo build --release`, `--worker-threads 1`), {gver} (geoip plugin, one UDP thread), {pver}. "
        f"Both on the demo database config/geoip/demo-city.mmdb with the same region map: "
        f"{', '.join(f'{n} at {la}, {lo}' for n, (la, lo, _) in REGIONS.items())}; Europe ordered "
        f"[{', '.join(EU_ORDER)}], every other located client by great-circle distance, clients without a "
        f"location us-east-1 (Meridian's local_region, the first of gdnsd's datacenters). "
        f"`python3 benches/dns/run.py`.")
    lines += ["", "Answers to `dig www.example.com A +subnet=…` (address's region, ECS scope returned):", "",
              "| client subnet | demo database | Meridian | scope | gdnsd | scope | where they differ, why |",
              "|---|---|---|---|---|---|---|"]
    same = 0
    for subnet, where, m, g, why in rows:
        same += m["addrs"] == g["addrs"]
        lines.append(f"| `{subnet}` | {where} | {region(m['addrs'])} | {m['scope']} | {region(g['addrs'])} | "
                     f"{g['scope']} | {why} |")
    lines += ["", f"Same region in {same} of {len(rows)}.", "", f"(a) Scope only: {SCOPE_NOTE}"]
    med = {n: {k: statistics.median(r[k] for r in runs[n]) for k in ("qps", "cpu_us", "cpu_share")} for n in runs}
    ratio = med["meridian"]["qps"] / med["gdnsd"]["qps"]
    cpu_ratio = med["meridian"]["cpu_us"] / med["gdnsd"]["cpu_us"]
    lines += ["", f"Queries per second, one core: dnsperf on CPU {LOADGEN_CPU} (one client, 100 queries "
              f"outstanding, `www.example.com A` with the ECS option {BENCH_SUBNET} on every query), the server "
              f"alone on CPU {SERVER_CPU}; {args.rounds} round{'s' if args.rounds > 1 else ''} of {args.seconds} s per server, interleaved, "
              f"each after 1 s of warm-up; medians (min–max). Server CPU from /proc over the queries answered:", "",
              "| server | queries/s | × gdnsd | server CPU µs/query | × gdnsd | server CPU busy | lost |",
              "|---|---|---|---|---|---|---|"]
    for n in ("meridian", "gdnsd"):
        rs = runs[n]
        lines.append(
            f"| {n} | {med_range([r['qps'] for r in rs])} | {med[n]['qps'] / med['gdnsd']['qps']:.2f} | "
            f"{med_range([r['cpu_us'] for r in rs], '{:.2f}')} | {med[n]['cpu_us'] / med['gdnsd']['cpu_us']:.2f} | "
            f"{med[n]['cpu_share'] * 100:.0f}% | {sum(r['lost'] for r in rs)} |")
    busy = max(med[n]["cpu_share"] for n in med)
    lines += ["", f"Meridian answers {ratio:.2f} × gdnsd's queries per second (target ≥ 0.5) and spends "
              f"{cpu_ratio:.2f} × its CPU per query, so on a core of its own it would answer about "
              f"{1 / cpu_ratio:.2f} × gdnsd's: {1e6 / med['meridian']['cpu_us']:,.0f} against "
              f"{1e6 / med['gdnsd']['cpu_us']:,.0f} queries per CPU-second. Neither server kept its core busy "
              f"(at most {busy * 100:.0f}%): the rates are bounded by dnsperf's one client and by the other work "
              f"on both cores, so they are what this machine gave, not either server's ceiling.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.write_text(with_section(RESULTS.read_text(), text))
        log(f"rewrote the '{SECTION[3:]}' section of {RESULTS.relative_to(ROOT)}")

if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
