"""The region lab's analysis: the per-request records client.py writes turned into the tables
run.py prints and writes to results.md (steady state, failure scenarios, availability, the
SLO summary, and what the global Prometheus saw)."""

import json
import os

from topology import REGIONS, SLO_P99_MS

def load_records(path):
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


def pct(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def window(records, start, end, **match):
    return [r for r in records if start <= r["t"] < end
            and all(r[k] == v for k, v in match.items())]


def fmt_ms(value):
    return "n/a" if value != value else f"{value:.1f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def steady_table(records, start, end):
    rows = []
    for region in REGIONS:
        rs = window(records, start, end, client=region)
        ok = [r for r in rs if r["ok"]]
        own = sum(1 for r in ok if r["served"] == region)
        p99 = pct([r["ms"] for r in ok], 99)
        rows.append([
            region, len(rs), fmt_ms(pct([r["ms"] for r in ok], 50)), fmt_ms(p99),
            f"< {SLO_P99_MS[region]}", "yes" if p99 < SLO_P99_MS[region] else "**no**",
            f"{100.0 * own / max(1, len(ok)):.1f}%", len(rs) - len(ok),
        ])
    return table(["client region", "requests", "P50 ms", "P99 ms", "SLO P99 ms", "holds",
                  "served in own region", "errors"], rows)


def first_answer_s(records, region, mode, t_event, t_end, target_pred):
    """Seconds from t_event to the first successful answer matching target_pred, or None."""
    rs = sorted(window(records, t_event, t_end, client=region, mode=mode), key=lambda r: r["t"])
    first = next((r for r in rs if r["ok"] and target_pred(r)), None)
    return None if first is None else first["t"] + first["ms"] / 1000 - t_event


def event_rows(records, region, t_event, t_restore, target_pred, label):
    """Per client mode: time from the event to the first answer matching target_pred, errors
    between event and restore, P99 during the first 10 s and after."""
    rows = []
    for mode in ("noretry", "retry"):
        rs = window(records, t_event, t_restore, client=region, mode=mode)
        first = next((r for r in sorted(rs, key=lambda r: r["t"]) if r["ok"] and target_pred(r)),
                     None)
        took = "never" if first is None else f"{(first['t'] + first['ms'] / 1000 - t_event):.2f} s"
        # Settled: the first matching answer after the last request that did not match.
        ordered = sorted(rs, key=lambda r: r["t"])
        bad = [r["t"] for r in ordered if not (r["ok"] and target_pred(r))]
        later = [r for r in ordered if not bad or r["t"] > bad[-1]]
        settled = "never" if not later else (
            f"{(later[0]['t'] + later[0]['ms'] / 1000 - t_event):.2f} s")
        errors = sum(1 for r in rs if not r["ok"])
        during = [r["ms"] for r in rs if r["ok"] and r["t"] < t_event + 10]
        after = [r["ms"] for r in rs if r["ok"] and r["t"] >= t_event + 10]
        rows.append([label, mode, took, settled, f"{errors} of {len(rs)}",
                     fmt_ms(pct(during, 99)), fmt_ms(pct(after, 99))])
    return rows


def dns_rows(records, region, t_event, t_end, label, back=False):
    """GeoDNS runs: per client mode, the time from the event to the first new DNS answer
    led by another region than `region` (`back`: led by `region` again), the queries made in
    the phase and how many got no answer."""
    own = REGIONS[region][0]
    rows = []
    for mode in ("noretry", "retry"):
        rs = sorted(window(records, t_event, t_end, client=region, mode=mode),
                    key=lambda r: r["t"])
        queries = [r for r in rs if r.get("resolved") is not None]
        moved = next((r for r in queries
                      if r["resolved"] and (r["resolved"][0] == own) == back), None)
        took = "never" if moved is None else f"{moved['t'] + moved['ms'] / 1000 - t_event:.2f} s"
        first = " ".join(moved["resolved"]) if moved else ""
        rows.append([label, mode, took, first, len(queries),
                     sum(1 for r in queries if not r["resolved"])])
    return rows


EVENT_HEADER = ["event (US clients)", "client", "first answer from the new region",
                "all answers from it after", "errors", "P99 ms first 10 s", "P99 ms after"]


def report(lab, args, records, marks, availability):
    us = "us-east-1"
    served_us = lambda r: r["served"] == us  # noqa: E731
    served_elsewhere = lambda r: r["served"] not in ("", us)  # noqa: E731
    sections = []
    sections.append(f"Wide-area delay: {lab.delay_kind}. DNS step: {args.dns}. "
                    f"{args.rate:g} requests/s per client, two clients (with and without "
                    f"retries) per client region. Machine: {os.cpu_count()} cores, load average "
                    f"(1 min) {lab.load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at "
                    "the end.")
    sections.append(slo_table(records, marks, availability, served_elsewhere))
    sections.append("### Steady state\n\n" + steady_table(records, *marks["steady"]))
    rows = []
    rows += event_rows(records, us, marks["service_down"], marks["service_restore"],
                       served_elsewhere, "service down → spill")
    rows += event_rows(records, us, marks["service_restore"], marks["region_down"],
                       served_us, "service back → recovery")
    rows += event_rows(records, us, marks["region_down"], marks["region_restore"],
                       served_elsewhere, "region down → failover")
    rows += event_rows(records, us, marks["region_restore"], availability[0],
                       served_us, "region back → recovery")
    sections.append("### Failure scenarios (us-east-1)\n\n" + table(EVENT_HEADER, rows))
    if args.dns == "geodns":
        rows = dns_rows(records, us, marks["region_down"], marks["region_restore"],
                        "region down")
        rows += dns_rows(records, us, marks["region_restore"], availability[0],
                         "region back", back=True)
        sections.append(
            "### GeoDNS answers to US clients (us-east-1)\n\n"
            + table(["event", "client", "first answer led by the other region (back: by "
                     "us-east-1)", "that answer", "DNS queries in the phase", "unanswered"],
                    rows))
    rows = []
    for mode in ("noretry", "retry"):
        for region in [*REGIONS, "all"]:
            match = {"mode": mode} | ({} if region == "all" else {"client": region})
            rs = window(records, *availability, **match)
            ok = sum(1 for r in rs if r["ok"])
            share = 100.0 * ok / max(1, len(rs))
            rows.append([mode, region, len(rs), ok, f"{share:.3f}%", "≥ 99.5%",
                         "yes" if share >= 99.5 else "**no**"])
    minutes = (availability[1] - availability[0]) / 60
    sections.append(f"### Availability over {minutes:.1f} minutes, us-east-1 killed and "
                    "restored twice\n\n" + table(["client", "client region", "requests",
                                                   "successful", "availability", "SLO", "holds"],
                                                  rows))
    if args.prometheus:
        sections.append(federation_table(lab))
    text = "\n\n".join(sections) + "\n"
    print(text)
    return text


def federation_table(lab):
    """What the global Prometheus knows: requests per (edge, upstream region) over the run
    (increase() counts across the edge restarts), and the edges whose scrape is up."""
    result = lab.federated(
        "sum by (edge_region, region) (increase(http_requests_total{route!=\"\"}[1h]))")
    rows = sorted(
        [r["metric"].get("edge_region", "(none)"), r["metric"].get("region", "(none)"),
         f"{float(r['value'][1]):.0f}"] for r in result)
    up = lab.federated("up{job=\"meridian\"}")
    edges = sorted(r["metric"].get("edge_region", "(none)") for r in up)
    return ("### Global Prometheus (federated from the three regional ones)\n\n"
            + table(["edge_region (took the request)", "region (served it)",
                     "requests (increase over the run)"], rows)
            + f"\n\nEdges scraped (`up{{job=\"meridian\"}}` federated): {', '.join(edges)}.")


def slo_table(records, marks, availability, served_elsewhere):
    rows = []
    for region in REGIONS:
        ok = [r["ms"] for r in window(records, *marks["steady"], client=region) if r["ok"]]
        p99 = pct(ok, 99)
        slo = SLO_P99_MS[region]
        rows.append([f"P99 < {slo} ms, clients in {region} (steady state)", f"{fmt_ms(p99)} ms",
                     "yes" if p99 < slo else "**no**"])
    for label, start, end in (
        ("service down", marks["service_down"], marks["service_restore"]),
        ("region down", marks["region_down"], marks["region_restore"]),
    ):
        for mode in ("retry", "noretry"):
            took = first_answer_s(records, "us-east-1", mode, start, end, served_elsewhere)
            measured = "never (until restored)" if took is None else f"{took:.2f} s"
            rows.append([f"failover < 5 min, {label} in us-east-1, US clients {mode}",
                         measured, "yes" if took is not None and took < 300 else "**no**"])
    for mode in ("retry", "noretry"):
        rs = window(records, *availability, mode=mode)
        share = 100.0 * sum(1 for r in rs if r["ok"]) / max(1, len(rs))
        rows.append([f"availability ≥ 99.5%, all clients {mode}", f"{share:.3f}%",
                     "yes" if share >= 99.5 else "**no**"])
    return "### Against the SLOs\n\n" + table(["SLO", "measured", "holds"], rows)
