"""What every handler gets: the store, the artifact files, keys and settings."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from bridge.artifacts import BlobStore, Limits, VerifyKey
from bridge.service import Governance
from bridge.store import DEVICE_CHANNEL, Listener, Store
from bridge.store import tables as t

from ._device_status import DeviceStatusCache, invalidate_all_devices, invalidate_device
from ._limits import ApiLimits
from ._remote_hub import RemoteHub
from ._throttle import TokenBuckets, WorkGate

__all__ = ["ApiContext", "Settings", "now"]


def now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True)
class Settings:
    device_token_lifetime: int = 7 * 24 * 3600  # Mender deviceauth jwt_exp_timeout default
    user_token_lifetime: int = 7 * 24 * 3600
    download_link_lifetime: int = 3600
    # scheme://host:port for artifact links; empty: the base URL the device used
    public_url: str = ""
    verify_keys: Sequence[VerifyKey] = ()
    artifact_limits: Limits = field(default_factory=Limits)
    max_body: int = 1 << 30  # the artifact upload (streamed to staging), and a cap on every body
    max_json_body: int = 1 << 20  # every other route's body (JSON, inventory, logs)
    # what the API accepts and stores, login throttling (docs/limits.md)
    limits: ApiLimits = field(default_factory=ApiLimits)
    # how long "this auth set is accepted" may be answered from memory; 0 disables the cache.
    # Changes made through this process apply at once; other processes (meshota admin) within this.
    device_status_ttl: float = 5.0
    # the fleet's public statistics (counted at check-in, public read-only pages; issue 18)
    public_stats: bool = False


@dataclass(slots=True)
class ApiContext:
    store: Store
    blobs: BlobStore
    secret: bytes
    settings: Settings
    device_status: DeviceStatusCache = field(default_factory=DeviceStatusCache)
    # wall clock of install windows and rollout phases (the simulator swaps in its virtual clock)
    clock: Callable[[], float] = field(default=now)
    # login throttling and the bounded scrypt gate (built from settings.limits)
    logins_by_user: TokenBuckets = field(init=False)
    logins_by_source: TokenBuckets = field(init=False)
    passwords: WorkGate = field(init=False)
    # roots' stream progress reports, per root (bridge/api/_mesh_reports.py)
    mesh_reports_by_root: TokenBuckets = field(init=False)
    # the service layer: every management operation's permission check, tenant scope and audit
    gov: Governance = field(init=False)
    # remote access: this process's connected mender-connect links and user sessions
    remote: RemoteHub = field(init=False)

    def __post_init__(self) -> None:
        self.gov = Governance(self.store)
        self.remote = RemoteHub(self.settings.limits)
        self.device_status.ttl = self.settings.device_status_ttl
        lim = self.settings.limits
        self.logins_by_user = TokenBuckets(lim.login_user_burst, lim.login_user_refill, lim.login_state_max)
        self.logins_by_source = TokenBuckets(
            lim.login_source_burst, lim.login_source_refill, lim.login_state_max
        )
        self.passwords = WorkGate(lim.password_workers, lim.password_queue_max)
        self.mesh_reports_by_root = TokenBuckets(
            lim.mesh_report_burst, lim.mesh_report_refill, lim.login_state_max
        )

    @property
    def limits(self) -> ApiLimits:
        return self.settings.limits

    @classmethod
    async def create(cls, store: Store, blobs: BlobStore, settings: Settings) -> ApiContext:
        """The context; on PostgreSQL it also LISTENs for device changes other processes commit
        (until ``store.close()``), so a decommissioned device's token is refused here at once."""
        ctx = cls(store, blobs, await load_secret(store), settings)
        await Listener(store, DEVICE_CHANNEL, invalidate_device, invalidate_all_devices).start()
        return ctx


async def load_secret(store: Store) -> bytes:
    """The token/link signing secret, created once and kept in the database."""
    async with store.transaction() as conn:
        row = (await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == "secret"))).first()
        if row is not None:
            return bytes.fromhex(row[0])
        value = secrets.token_bytes(32)
        await conn.execute(sa.insert(t.settings).values(key="secret", value=value.hex()))
        return value
