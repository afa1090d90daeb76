"""Server-side tests, one folder per room of bridge/ (api, gateway, http, mqtt, store).

Fixtures come from tests/conftest.py (``db``, ``running``, ``mosquitto``); helpers from
tests/support/ (mender.py: keys, artifacts, device logins; mqtt.py: a bridge on a real broker;
gateway_dtls.py and dtls_udp.py: DTLS gateways and nodes over loopback).
"""
