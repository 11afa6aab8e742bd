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


def _known_counters() -> tuple[str, ...]:
    """Every counter the engine and the daemon may increment, with every label value
    they use: rendered at 0 from start-up, so that an alert on ``increase(...) > 0`` (or on
    a rate) sees the first failure too. Label values are the stable lower-case reasons of
    the README's troubleshooting table."""
    from isakmp.doi import NotifyType
    from isakmp.errors import notify_reason
    from kink.kerberos.errors import REASONS, KrbErrorCode, krb_reason
    from kink.wire import ErrorCode, kink_error_reason

    from .present import FAILURE_REASONS

    notifies = [notify_reason(n) for n in NotifyType if n < 16384]
    kink_errors = [kink_error_reason(c) for c in ErrorCode if c != ErrorCode.KINK_OK]
    krb_errors = list(dict.fromkeys(f"krb-{krb_reason(c)}" for c in KrbErrorCode if c))
    drops = (
        # engine (kink/engine): authentication, replay, transactions
        "ap-rep", "ap-req", "bad-tgt", "internal-error", "krb-error", "no-ap-req", "no-tgt",
        "no-tgt-req", "rate-limited", "replay", "shutting-down", "u2u-old-tgt",
        "unauthenticated-reply", "unexpected-ack", "unknown-xid", "wrong-source",
        # wire decoding (kink/wire.py KinkDecodeError.reason)
        "checksum", "cksum-length", "decrypt", "doi", "encrypt-not-last", "encrypt-short",
        "length", "message-type", "nested-encrypt", "no-checksum", "payload-count",
        "payload-length", "payload-type", "payload-value", "qm-version", "short", "version",
        # daemon
        "no-socket-for-family",
    )
    failures = list(dict.fromkeys([*FAILURE_REASONS, *REASONS, *notifies, *kink_errors,
                                   *krb_errors, "reconfigured"]))
    names = list(_PLAIN)
    names += ["negotiations.responded", "negotiations.retried.no-ke", "rekeys.skipped",
              "refused.half-open-limit", "refused.wrong-address", "rate-limited.known-ticket",
              "acquires", "acquires.unmatched", "kernel_expire.unknown", "errors.internal",
              "kernel.acquires", "kernel.expires-soft", "kernel.expires-hard",
              "kernel.events-lost", "socket.errors", "sas.expired",
              "sas.superseded", "collisions"]
    names += [f"dropped.{r}" for r in drops]
    names += [f"negotiations.failed.{r}" for r in failures]
    names += [f"errors.sent.{c}" for c in (*notifies, *kink_errors, *krb_errors)]
    names += [f"kdc.failures.{r}" for r in REASONS]
    return tuple(dict.fromkeys(names))


_KNOWN: tuple[str, ...] | None = None


def known_counters() -> tuple[str, ...]:
    """The declared counters (:func:`_known_counters`, computed once)."""
    global _KNOWN
    if _KNOWN is None:
        _KNOWN = _known_counters()
    return _KNOWN


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
           histograms: Mapping[str, tuple[str, Histogram]] | None = None,
           known: Iterable[str] | None = None) -> str:
    """Prometheus text exposition of engine counters, daemon gauges and histograms.

    ``gauges``: ``{metric_name: (help, labels, value)}``; several label sets of
    one metric can be given by keys ``name{...}`` (see :func:`gauge_key`).
    ``known``: counters shown at 0 until incremented (default :func:`known_counters`).
    """
    out: list[str] = []
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    helps: dict[str, tuple[str, str]] = {}
    merged = dict.fromkeys(known_counters() if known is None else known, 0)
    merged.update(counters)
    for key, value in sorted(merged.items()):
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
