"""Fixtures of the artifact store tests: the shared ones come from tests/conftest.py."""
