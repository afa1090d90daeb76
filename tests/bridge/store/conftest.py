"""bridge.store: migrations, transactions, group commit; every test on SQLite and PostgreSQL (``db``)."""
