"""The region lab's topology: regions, their lab addresses and client ranges, the one-way delays
between them, and the SLOs the lab measures against. Used by run.py and report.py."""

REGIONS = {
    # name: (lab address, lat, lon, client range, a client address, one-way ms inside the region)
    "us-east-1": ("10.77.0.1", 38.9, -77.4, "192.0.2.0/24", "192.0.2.10", 2),
    "eu-west-1": ("10.77.0.2", 53.3, -6.3, "198.51.100.0/24", "198.51.100.10", 3),
    "ap-southeast-1": ("10.77.0.3", 1.35, 103.8, "203.0.113.0/24", "203.0.113.10", 4),
}
CLIENTS_ADDRESS = "10.77.0.10"
# One-way delay between regions, milliseconds.
WAN_MS = {
    frozenset(("us-east-1", "eu-west-1")): 40,
    frozenset(("us-east-1", "ap-southeast-1")): 90,
    frozenset(("eu-west-1", "ap-southeast-1")): 80,
}
JITTER = 0.1  # +-10% of each delay
SLO_P99_MS = {"us-east-1": 100, "eu-west-1": 150, "ap-southeast-1": 200}
SERVICE = "api.example.com"
SHORT = {"us-east-1": "us", "eu-west-1": "eu", "ap-southeast-1": "ap"}


def one_way_ms(a, b):
    return REGIONS[a][5] if a == b else WAN_MS[frozenset((a, b))]


def nearest_first(region):
    return sorted(REGIONS, key=lambda other: one_way_ms(region, other))
