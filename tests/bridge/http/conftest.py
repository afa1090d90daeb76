"""bridge.http: the ASGI adapter, and the real mender-client and mender-cli against it.

``running`` (tests/conftest.py) is the server on ``db``; file-local fixtures start servers with
their own settings.
"""
