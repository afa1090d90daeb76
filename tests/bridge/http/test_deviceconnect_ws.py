"""The deviceconnect websockets in the ASGI adapter, without mender-connect: refusals are HTTP
answers before the handshake; a user's bad messages are answered on the session, never relayed.

The device side here is a protocol-faithful stand-in (a websocket client speaking ProtoMsg with a
real device token), not mender-connect: tests/bridge/http/test_mender_connect.py runs the real one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgpack
import pytest
import websockets
from websockets.asyncio.client import connect

from tests.support.mender import RunningServer, accept, device_key, device_login

MM = "/api/meshota/v1/management/remote_access/devices"


def _ws(url: str, path: str) -> str:
    return url.replace("http://", "ws://") + path


def _msg(hdr: dict[str, Any], body: bytes = b"") -> bytes:
    return bytes(msgpack.packb({"hdr": hdr, "body": body}, use_bin_type=True))


async def _status(url: str, token: str) -> tuple[int, str]:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}):
            pass
    response = info.value.response
    return response.status_code, response.body.decode() if response.body else ""


def test_refusals_and_relay(running: RunningServer) -> None:
    url, admin = running.url, running.token
    key = device_key("ecdsa")
    assert device_login(url, key, "02:00:00:00:ee:01").status_code == 401
    with running.client() as api:
        device = accept(api)
    r = device_login(url, key, "02:00:00:00:ee:01")
    assert r.status_code == 200, r.text
    dev_token = r.text
    user_path = f"/api/management/v1/deviceconnect/devices/{device}/connect"

    async def run() -> None:
        assert (await _status(_ws(url, "/api/nowhere"), admin))[0] == 404
        assert (await _status(_ws(url, "/api/devices/v1/deviceconnect/connect"), admin))[0] == 401
        assert (await _status(_ws(url, user_path), dev_token))[0] == 401
        status, body = await _status(_ws(url, "/api/management/v1/deviceconnect/devices/nope/connect"), admin)
        assert status == 404, body
        status, body = await _status(_ws(url, user_path), admin)
        assert status == 403 and "not granted" in body, body
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {admin}"}) as api:
            r = await api.put(f"{url}{MM}/{device}", json={"duration": 60, "protocols": ["shell"]})
            assert r.status_code == 200, r.text
        status, body = await _status(_ws(url, user_path), admin)
        assert status == 409 and "not connected" in body, body

        dev_headers = {"Authorization": f"Bearer {dev_token}"}
        async with connect(
            _ws(url, "/api/devices/v1/deviceconnect/connect"), additional_headers=dev_headers
        ) as dev:
            async with connect(
                _ws(url, user_path), additional_headers={"Authorization": f"Bearer {admin}"}
            ) as user:
                await user.send(b"\xc1 not msgpack")
                err = msgpack.unpackb(await user.recv(), raw=False)
                assert err["hdr"]["proto"] == 0xFFFF and err["hdr"]["typ"] == "error"
                assert "not a msgpack ProtoMsg" in msgpack.unpackb(err["body"], raw=False)["err"]
                await user.send(_msg({"proto": 3, "typ": "new"}))  # port forwarding: never relayed
                err = msgpack.unpackb(await user.recv(), raw=False)
                assert "not granted" in msgpack.unpackb(err["body"], raw=False)["err"]
                await user.send(
                    _msg({"proto": 1, "typ": "shell", "sid": "mine", "props": {"user_id": "x"}}, b"ls\n")
                )
                got = msgpack.unpackb(await asyncio.wait_for(dev.recv(), 10), raw=False)
                assert got["body"] == b"ls\n" and got["hdr"]["sid"] != "mine"
                assert got["hdr"]["props"]["user_id"] != "x"
                sid = got["hdr"]["sid"]
                await dev.send(_msg({"proto": 1, "typ": "shell", "sid": "someone-else"}, b"lost"))
                await dev.send(_msg({"proto": 1, "typ": "shell", "sid": sid}, b"out"))
                back = msgpack.unpackb(await asyncio.wait_for(user.recv(), 10), raw=False)
                assert back["body"] == b"out"  # the other sid was dropped, not delivered here
            # the user closed: the device hears control close for that session
            bye = msgpack.unpackb(await asyncio.wait_for(dev.recv(), 10), raw=False)
            while bye["hdr"]["typ"] != "close":
                bye = msgpack.unpackb(await asyncio.wait_for(dev.recv(), 10), raw=False)
            assert bye["hdr"] == {"proto": 0xFFFF, "typ": "close", "sid": sid, "props": bye["hdr"]["props"]}

    asyncio.run(run())
