"""The Prometheus metrics of one process (prometheus-client), one registry per :class:`Metrics`.

What a process exports (docs/deployment.md lists them with their labels):

- ``meshota_requests_total{route,method,status,transport}`` and ``meshota_request_seconds``
  (histogram by route and transport): every call through the routing table; ``transport`` is
  ``mqtt`` when a gateway stamped an identity on it, else ``http``; ``route`` is the route's
  pattern (``/api/devices/v1/inventory/device/attributes``), never the path, so the label set
  stays bounded whatever a client sends;
- ``meshota_group_commits_total``, ``meshota_group_commit_size`` (histogram of requests per
  transaction), ``meshota_group_fallbacks_total``, ``meshota_duplicates_total{where}``
  (``memory``: this worker's reply cache; ``database``: another worker's ``request_log`` row);
- gauges read at scrape time from the objects that own the numbers (no bookkeeping on the hot
  path): ``meshota_queue_depth{queue}`` (bridge backlog, group queue, unacknowledged replies),
  ``meshota_mqttsn_sessions``, ``meshota_dtls_sessions``, ``meshota_dtls_handshakes``.

Gauge sources are registered as callables (:meth:`Metrics.gauge_source`); several sources of one
name (two bridges in one test process) are summed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics", "process_metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# gauge name -> (help, label name or None)
GAUGES: dict[str, tuple[str, str | None]] = {
    "meshota_queue_depth": ("messages waiting inside this process, by queue", "queue"),
    "meshota_mqttsn_sessions": ("MQTT-SN sessions held by this gateway", None),
    "meshota_dtls_sessions": ("established DTLS sessions of this gateway", None),
    "meshota_dtls_handshakes": ("DTLS handshakes in progress in this gateway", None),
}


class _Gauges(Collector):
    def __init__(self) -> None:
        self._sources: dict[tuple[str, str], list[Callable[[], float]]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, label: str, source: Callable[[], float]) -> Callable[[], None]:
        with self._lock:
            self._sources.setdefault((name, label), []).append(source)

        def remove() -> None:
            with self._lock:
                sources = self._sources.get((name, label), [])
                if source in sources:
                    sources.remove(source)

        return remove

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            items = [(key, list(fns)) for key, fns in self._sources.items()]
        families: dict[str, GaugeMetricFamily] = {}
        for (name, label), fns in sorted(items):
            help_text, label_name = GAUGES[name]
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(
                    name, help_text, labels=[label_name] if label_name else None
                )
            total = 0.0
            for fn in fns:
                try:
                    total += float(fn())
                except Exception:  # a source that cannot answer does not break the scrape
                    continue
            family.add_metric([label] if label_name else [], total)
        yield from families.values()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "meshota_requests", "API requests handled, by route pattern, method, status and transport",
            ["route", "method", "status", "transport"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "meshota_request_seconds", "time in the routing table and handler, by route and transport",
            ["route", "transport"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.group_commits = Counter(
            "meshota_group_commits", "transactions that ran several MQTT requests (group commit)", registry=r
        )
        self.group_size = Histogram(
            "meshota_group_commit_size",
            "requests per transaction of the MQTT bridge (1: alone)",
            buckets=_GROUP_BUCKETS,
            registry=r,
        )
        self.group_fallbacks = Counter(
            "meshota_group_fallbacks", "group commits rolled back and run request by request", registry=r
        )
        self.duplicates = Counter(
            "meshota_duplicates", "redelivered requests answered without running them again",
            ["where"], registry=r,
        )  # fmt: skip
        self._gauges = _Gauges()
        r.register(self._gauges)

    def observe_request(self, route: str, method: str, status: int, transport: str, seconds: float) -> None:
        self.requests.labels(route, method, str(status), transport).inc()
        self.latency.labels(route, transport).observe(seconds)

    def gauge_source(self, name: str, source: Callable[[], float], label: str = "") -> Callable[[], None]:
        """Export ``source()`` as gauge ``name`` (``label``: the value of its one label);
        returns the function that removes it again."""
        if name not in GAUGES:
            raise ValueError(f"unknown gauge {name!r}")
        return self._gauges.add(name, label, source)

    def render(self) -> bytes:
        """The text exposition format (``/metrics``)."""
        return generate_latest(self.registry)


_PROCESS: Metrics | None = None
_PROCESS_LOCK = threading.Lock()


def process_metrics() -> Metrics:
    """This process's metrics (what ``/metrics`` serves); created on first use."""
    global _PROCESS
    with _PROCESS_LOCK:
        if _PROCESS is None:
            _PROCESS = Metrics()
        return _PROCESS
