"""Exceptions raised by the MQTT-SN package.

    MqttSnError
    ├── LocalProtocolError      our caller asked for something invalid (bad field, wrong state)
    └── RemoteProtocolError     the peer sent something invalid
        └── DecodeError         bytes that are not a valid MQTT-SN v1.2 packet

A decoder never raises anything but DecodeError (no IndexError, struct.error, UnicodeError).
"""

from __future__ import annotations


class MqttSnError(Exception):
    """Base of every error raised by :mod:`mqttsn`."""


class LocalProtocolError(MqttSnError, ValueError):
    """The local caller built an invalid packet or used a session in the wrong state."""


class RemoteProtocolError(MqttSnError):
    """The remote peer violated the protocol."""


class DecodeError(RemoteProtocolError):
    """A datagram could not be decoded as an MQTT-SN v1.2 packet."""
