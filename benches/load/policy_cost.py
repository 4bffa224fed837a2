#!/usr/bin/env python3
"""Instructions per proxied request for a route without policies and one with a rewrite plus
two header rules: callgrind counts Meridian's user-space instructions for 2,000 and 12,000
HTTP/1.1 requests (h2load, 10 keep-alive connections) and divides the difference by 10,000, so
start-up and shutdown cancel out. The count repeats within a fraction of a percent whatever else
the machine does, so two builds can be compared on a busy machine.

    benches/load/policy_cost.py path/to/meridian [path/to/other/meridian ...]
"""
import os, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKEND, PROXY = 18981, 18980
ROUTES = {
    "plain": "  - { name: bench, hosts: ['*'], cluster: bench }\n",
    "rewrite+2 headers": (
        "  - name: bench\n    hosts: ['*']\n    cluster: bench\n"
        "    match: { path_prefix: / }\n"
        "    rewrite: { prefix: /v1/ }\n"
        "    request_headers: { set: { x-edge: meridian }, add: { x-client-country: '%CLIENT_COUNTRY%' } }\n"
    ),
}


def wait_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port} after {timeout}s")


def config(tmp, route):
    conf = Path(tmp) / "meridian.yaml"
    conf.write_text(f"""
local_region: eu-west-1
listeners:
  - {{ name: http, bind: "127.0.0.1:{PROXY}" }}
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
    endpoints: {{ eu-west-1: ["127.0.0.1:{BACKEND}"] }}
    outlier_detection: {{ enabled: false }}
routes:
{route}""")
    return conf


def per_request(tmp, meridian, conf):
    totals = []
    for n in (2000, 12000):
        out = Path(tmp) / f"callgrind.{n}"
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                 meridian, "run", "-c", str(conf), "--worker-threads", "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "MERIDIAN_LOG": "error"})
        try:
            wait_port(PROXY, 120)
            subprocess.run(["h2load", "--h1", "-n", str(n), "-c", "10", "-H", "X-Forwarded-For: 198.51.100.7",
                            f"http://127.0.0.1:{PROXY}/"], check=True, stdout=subprocess.DEVNULL)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        line = next(l for l in out.read_text().splitlines() if l.startswith(("summary:", "totals:")))
        totals.append(int(line.split()[1]))
    return (totals[1] - totals[0]) / 10000


def main():
    binaries = sys.argv[1:] or [str(ROOT / "target/release/meridian")]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "logs").mkdir()
        nginx_conf = Path(tmp) / "nginx.conf"
        nginx_conf.write_text(f"""daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{}}
http {{ access_log off; server {{ listen 127.0.0.1:{BACKEND}; location / {{ return 200 "ok"; }} }} }}
""")
        backend = subprocess.Popen(["nginx", "-p", tmp, "-c", str(nginx_conf)])
        try:
            wait_port(BACKEND, 10)
            print("| build | route | instructions/request |\n|---|---|---|")
            for meridian in binaries:
                for name, route in ROUTES.items():
                    conf = config(tmp, route)
                    check = subprocess.run([meridian, "check", "-c", str(conf)], capture_output=True, text=True)
                    if check.returncode != 0:
                        print(f"| {meridian} | {name} | config refused: {check.stdout.strip()[:80]} |")
                        continue
                    print(f"| {meridian} | {name} | {per_request(tmp, meridian, conf):,.0f} |", flush=True)
        finally:
            backend.terminate()
            backend.wait()


if __name__ == "__main__":
    main()
