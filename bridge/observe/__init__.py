"""Observability of every meshota process: Prometheus metrics and the probe endpoint.

``/metrics`` sits next to ``/healthz`` and ``/readyz``: on the HTTP API (bridge/http) and, for
processes without one (``meshota gateway --metrics H:P``), on a :class:`ProbeServer`.
"""

from ._metrics import CONTENT_TYPE, GAUGES, Metrics, process_metrics
from ._probe_server import ProbeServer

__all__ = ["CONTENT_TYPE", "GAUGES", "Metrics", "ProbeServer", "process_metrics"]
