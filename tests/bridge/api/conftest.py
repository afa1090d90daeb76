"""bridge.api: the transport-free handlers, over HTTP (``running``) or called directly (``db``).

Both fixtures come from tests/conftest.py and run each test on SQLite and on PostgreSQL.
"""
