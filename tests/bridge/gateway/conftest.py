"""bridge.gateway: the UDP and DTLS listeners, the DTLS server core and the broker link.

Most tests run against a real broker (the ``mosquitto`` fixture, tests/conftest.py) and real
peers (openssl s_client, the mqtt-sn-12 client); DTLS rigs are in tests/support/gateway_dtls.py.
"""
