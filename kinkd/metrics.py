"""Metrics: counters and gauges rendered in the Prometheus text exposition format (0.0.4).

The engine keeps plain dotted counters (``dropped.checksum``,
``negotiations.failed.no-proposal``); :func:`render` maps them to metric families
with labels (``kinkd_packets_dropped_total{reason="checksum"}``). The daemon adds
gauges (SAs by state, peers, transactions) and a KDC latency histogram.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping

# counter prefix -> (metric name, label name or None, help)
_FAMILIES: list[tuple[str, str, str | None, str]] = [
    ("dropped.", "kinkd_packets_dropped_total", "reason", "Datagrams dropped, by reason"),
    ("negotiations.failed.", "kinkd_negotiations_failed_total", "reason",
     "Negotiations that failed, by reason"),
    ("errors.sent.", "kinkd_errors_sent_total", "code", "KINK/Kerberos errors sent, by code"),
    ("kdc.failures.", "kinkd_kdc_failures_total", "reason", "KDC requests that failed"),
]
_PLAIN: dict[str, tuple[str, str]] = {
    "rx.datagrams": ("kinkd_datagrams_received_total", "Datagrams received"),
    "tx.datagrams": ("kinkd_datagrams_sent_total", "Datagrams sent"),
    "negotiations.started": ("kinkd_negotiations_started_total", "Negotiations started"),
    "negotiations.succeeded": ("kinkd_negotiations_succeeded_total", "Negotiations succeeded"),
    "retransmissions": ("kinkd_retransmissions_total", "Messages retransmitted"),
    "reply_cache.hits": ("kinkd_reply_cache_hits_total", "Retransmitted commands answered from the reply cache"),
    "kdc.requests": ("kinkd_kdc_requests_total", "Ticket requests to the KDC"),
    "sas.installed": ("kinkd_sas_installed_total", "SAs installed"),
    "sas.deleted": ("kinkd_sas_deleted_total", "SAs deleted"),
    "rekeys": ("kinkd_rekeys_total", "SAs rekeyed"),
    "dpd.probes": ("kinkd_dpd_probes_total", "Dead peer detection STATUS probes"),
    "peers.rebooted": ("kinkd_peers_rebooted_total", "Peers seen with a new epoch"),
    "peers.dead": ("kinkd_peers_dead_total", "Peers declared dead"),
}
_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Histogram:
    """A fixed-bucket histogram (seconds)."""

    def __init__(self, buckets: Iterable[float] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)):
        self.buckets = sorted(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, v)] += 1
        self.total += v
        self.n += 1


def render(counters: Mapping[str, int], gauges: Mapping[str, tuple[str, dict[str, str], float]] | None = None,
           histograms: Mapping[str, tuple[str, Histogram]] | None = None) -> str:
    """Prometheus text exposition of engine counters, daemon gauges and histograms.

    ``gauges``: ``{metric_name: (help, labels, value)}``; several label sets of
    one metric can be given by keys ``name{...}`` (see :func:`gauge_key`).
    """
    out: list[str] = []
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    helps: dict[str, tuple[str, str]] = {}
    for key, value in sorted(counters.items()):
        if key in _PLAIN:
            name, help_ = _PLAIN[key]
            families.setdefault(name, []).append(({}, value))
            helps[name] = ("counter", help_)
            continue
        for prefix, name, label, help_ in _FAMILIES:
            if key.startswith(prefix):
                families.setdefault(name, []).append(({label: key[len(prefix):]}, value))
                helps[name] = ("counter", help_)
                break
        else:
            name = "kinkd_" + _NAME_OK.sub("_", key) + "_total"
            families.setdefault(name, []).append(({}, value))
            helps[name] = ("counter", key)
    for key, (help_, labels, value) in (gauges or {}).items():
        name = key.split("{", 1)[0]
        families.setdefault(name, []).append((labels, value))
        helps[name] = ("gauge", help_)
    for name in sorted(families):
        kind, help_ = helps[name]
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in families[name]:
            out.append(f"{name}{_labels(labels)} {_num(value)}")
    for name, (help_, h) in sorted((histograms or {}).items()):
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} histogram")
        cum = 0
        for b, c in zip(h.buckets, h.counts, strict=False):
            cum += c
            out.append(f'{name}_bucket{{le="{_num(b)}"}} {cum}')
        out.append(f'{name}_bucket{{le="+Inf"}} {h.n}')
        out.append(f"{name}_sum {_num(h.total)}")
        out.append(f"{name}_count {h.n}")
    return "\n".join(out) + "\n"


def gauge_key(name: str, labels: Mapping[str, str]) -> str:
    return name + _labels(labels)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _num(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))
