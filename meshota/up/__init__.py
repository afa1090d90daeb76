"""``meshota up``: the whole server side from one command (the main is meshota/cli/up.py).

``config`` (the TOML schema and defaults), ``datadir`` (what the first start creates),
``supervisor`` (children started, restarted with backoff, stopped in order), ``stack`` (which
children: mosquitto, ``meshota server``, ``meshota gateway``).
"""
