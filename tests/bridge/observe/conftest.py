"""bridge.observe: Prometheus metrics and the probe endpoint (no fixtures of its own)."""
