"""meshota: every command's main as a user runs it (exit codes, one-line errors, real runs).

Fixtures from tests/conftest.py (``mosquitto``, ``db``); helpers from tests/support/.
"""
