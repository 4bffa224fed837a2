#!/usr/bin/env python3
"""A profile-guided release build of Meridian: target/pgo/release/meridian.

    python3 benches/pgo.py            # about 10 minutes on 2 cores

1. Builds an instrumented binary (rustc -Cprofile-generate) into target/pgo-gen.
2. Trains it on the load harness's setup (benches/load/run.py: one nginx backend, the same
   Meridian config): HTTP/1.1 keep-alive with X-Forwarded-For through the whole geo path,
   HTTP/2 over cleartext and over TLS 1.3, and requests with bodies, so every data path the
   harness measures is in the profile (code a profile never saw is laid out as cold).
3. Merges the profile with the toolchain's llvm-profdata (rustup's llvm-tools component,
   added when missing) and builds target/pgo/release/meridian with -Cprofile-use.

The binary is the same program as `cargo build --release` makes; only the layout and
inlining of its code follow the profile (callgrind: a tenth of the instruction-cache misses).
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GEN_DIR = ROOT / "target/pgo-gen"
PROFILES = GEN_DIR / "profiles"
MERGED = GEN_DIR / "meridian.profdata"
OUT_DIR = ROOT / "target/pgo"

# What the training runs: the backend, the HTTP/1.1 and HTTP/2 load generators and the
# certificate for the TLS listener. Nothing is pinned to a CPU (load.PIN), so the build also
# runs in a container limited to fewer CPUs.
TRAINING_TOOLS = [("nginx", "nginx-light"), ("wrk", "wrk"), ("h2load", "nghttp2-client"), ("openssl", "openssl")]

spec = importlib.util.spec_from_file_location("load", ROOT / "benches/load/run.py")
load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(load)
load.PIN = False


def llvm_profdata():
    """rustc's own llvm-profdata: the profile format follows the compiler's LLVM version."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    host = next(line.split()[1] for line in subprocess.run(
        ["rustc", "-vV"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.startswith("host:"))
    tool = Path(sysroot) / "lib/rustlib" / host / "bin/llvm-profdata"
    if not tool.exists():
        print("adding rustup's llvm-tools component (llvm-profdata)", flush=True)
        subprocess.run(["rustup", "component", "add", "llvm-tools-preview"], check=True)
    if not tool.exists():
        sys.exit(f"llvm-profdata not found at {tool}: install rustup's llvm-tools component")
    return tool


def build(target_dir, rustflags):
    env = {**os.environ, "CARGO_TARGET_DIR": str(target_dir), "RUSTFLAGS": rustflags}
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "meridian"], cwd=ROOT,
                   env=env, check=True)
    return Path(target_dir) / "release/meridian"


def train(binary, tmp):
    """The harness's workloads, shortened: enough requests for every path to be counted."""
    procs = load.Processes(tmp)
    try:
        procs.start("backend", [load.nginx_bin(), "-c", str(load.nginx_conf(tmp, "backend"))],
                    load.PORTS["backend"])
        meridian = subprocess.Popen(
            [str(binary), "run", "-c", str(load.meridian_conf(tmp)), "--worker-threads", "0"],
            env={**os.environ, "MERIDIAN_LOG": "error"})
        try:
            load.wait_port(load.PORTS["meridian"], timeout=60)
            load.wait_port(load.PORTS["meridian-h2"], timeout=60)
            requests = load.wrk(load.PORTS["meridian"], 8)
            print(f"trained: HTTP/1.1 {requests} requests", flush=True)
            for tls, port in ((False, load.PORTS["meridian-h2c"]), (True, load.PORTS["meridian-h2"])):
                requests, _ = load.h2load(port, tls, 3)
                print(f"trained: HTTP/2{' + TLS' if tls else ''} {requests} requests", flush=True)
            requests = load.wrk(load.PORTS["meridian"], 3, connections=10, script=load.post_script(tmp))
            print(f"trained: HTTP/1.1 with request bodies {requests} requests", flush=True)
        finally:
            # A clean exit writes the profile.
            meridian.send_signal(signal.SIGTERM)
            if meridian.wait(timeout=60) != 0:
                sys.exit("the instrumented Meridian did not exit cleanly; no profile")
    finally:
        procs.stop_all()


def main():
    import tempfile
    load.ensure_tools(TRAINING_TOOLS, oha=False)
    profdata = llvm_profdata()
    print("building the instrumented binary", flush=True)
    instrumented = build(GEN_DIR, f"-Cprofile-generate={PROFILES}")
    # Build scripts ran instrumented too: only the proxy's own run goes into the profile.
    shutil.rmtree(PROFILES, ignore_errors=True)
    train(instrumented, tempfile.mkdtemp(prefix="meridian-pgo-"))
    subprocess.run([str(profdata), "merge", "-o", str(MERGED), str(PROFILES)], check=True)
    print("building with the profile", flush=True)
    binary = build(OUT_DIR, f"-Cprofile-use={MERGED}")
    print(f"built {binary.relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    main()
