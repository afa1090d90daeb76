"""firmware_proto.aio: the asyncio drivers over real loopback sockets (UDP, DTLS, multicast).

Uses ``artifacts`` from tests/firmware_proto/conftest.py where a real signed image is needed.
"""
