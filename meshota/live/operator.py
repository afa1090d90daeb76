"""The operator's side of the live demo: the management API over HTTP, as a fleet operator (or
Mender's UI) uses it — log in, accept devices, upload an artifact, deploy, watch statistics."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["Operator", "OperatorError"]

_DEVAUTH = "/api/management/v2/devauth/devices"
_DEPLOY = "/api/management/v1/deployments"


class OperatorError(RuntimeError):
    """The management API refused a call (the message names the call and the answer)."""


def _check(r: httpx.Response, *expected: int) -> httpx.Response:
    if r.status_code not in expected:
        raise OperatorError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:200]}")
    return r


class Operator:
    """``async with Operator(url) as op: await op.login(user, password); ...``"""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.calls = 0

    async def __aenter__(self) -> Operator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def _call(self, method: str, path: str, *expected: int, **kw: Any) -> httpx.Response:
        self.calls += 1
        return _check(await self.client.request(method, path, **kw), *expected)

    async def login(self, user: str, password: str) -> None:
        r = await self._call("POST", "/api/management/v1/useradm/auth/login", 200, auth=(user, password))
        self.client.headers["Authorization"] = f"Bearer {r.text}"

    async def devices(self) -> list[dict[str, Any]]:
        r = await self._call("GET", _DEVAUTH, 200, params={"per_page": 500})
        listing: list[dict[str, Any]] = r.json()
        return listing

    async def accept_pending(self) -> dict[str, str]:
        """Accept every pending device's newest auth set; mac -> Mender device id of those."""
        accepted = {}
        for dev in await self.devices():
            if dev["status"] != "pending":
                continue
            aid = dev["auth_sets"][-1]["id"]
            await self._call(
                "PUT", f"{_DEVAUTH}/{dev['id']}/auth/{aid}/status", 204, json={"status": "accepted"}
            )
            accepted[dev["identity_data"]["mac"]] = dev["id"]
        return accepted

    async def upload(self, name: str, artifact: bytes) -> str:
        """Upload a Mender artifact (the server checks its signature); the artifact id."""
        files = {"artifact": (f"{name}.mender", artifact, "application/octet-stream")}
        r = await self._call("POST", f"{_DEPLOY}/artifacts", 201, files=files)
        return r.headers["location"].rsplit("/", 1)[1]

    async def deploy(self, name: str, artifact_name: str, device_ids: list[str]) -> str:
        body = {"name": name, "artifact_name": artifact_name, "devices": device_ids}
        r = await self._call("POST", f"{_DEPLOY}/deployments", 201, json=body)
        return r.headers["location"].rsplit("/", 1)[1]

    async def statistics(self, deployment_id: str) -> dict[str, int]:
        r = await self._call("GET", f"{_DEPLOY}/deployments/{deployment_id}/statistics", 200)
        stats: dict[str, int] = r.json()
        return stats

    async def deployment_devices(self, deployment_id: str) -> list[dict[str, Any]]:
        r = await self._call("GET", f"{_DEPLOY}/deployments/{deployment_id}/devices", 200)
        listing: list[dict[str, Any]] = r.json()
        return listing

    async def mesh_view(self) -> dict[str, Any]:
        """The mesh view: the roots' progress reports per stream and the sub-meshes (meshota)."""
        view: dict[str, Any] = (await self._call("GET", "/api/meshota/v1/management/mesh", 200)).json()
        return view

    async def chunk_map_key(self) -> bytes:
        """The PEM public key nodes check chunk maps with (meshota extension)."""
        return (await self._call("GET", "/api/meshota/v1/management/chunk_map_key", 200)).content
