"""Wiring for one server process: config -> store + artifact dir -> ASGI app -> uvicorn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from bridge.api import ApiContext, Router, Settings, build_router
from bridge.artifacts import BlobStore
from bridge.observe import CONTENT_TYPE, process_metrics
from bridge.store import Store
from bridge.ui import build_ui

from ._app import ASGIApp, HttpAdapter

__all__ = ["BackgroundServer", "ServerConfig", "Service", "create_app", "serve", "uvicorn_server"]

# Something else served from the same event loop and store (e.g. the MQTT bridge): started with
# the router once the store is open; returns the coroutine function that stops it.
Service = Callable[[Router[ApiContext]], Awaitable[Callable[[], Awaitable[None]]]]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    db_url: str
    artifacts_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    db_schema: str | None = None  # PostgreSQL only (tests isolate themselves this way)
    settings: Settings = field(default_factory=Settings)
    services: tuple[Service, ...] = ()
    access_log: bool = False  # a log line per request is measurable load; off unless asked
    ui: bool = True  # the admin UI under /ui/ (bridge/ui, docs/ui.md)


def create_app(config: ServerConfig) -> HttpAdapter:
    """The ASGI app; the store opens (and migrates) in the serving event loop at startup."""
    app: HttpAdapter
    metrics = process_metrics()

    async def startup() -> Router[ApiContext]:
        state = app.state
        state["loop"] = asyncio.get_running_loop()
        store = Store.open(config.db_url, schema=config.db_schema)
        state["store"] = store
        await store.migrate()
        blobs = BlobStore(config.artifacts_dir)
        await asyncio.to_thread(blobs.remove_leftovers)  # staging files a crash left behind
        ctx = await ApiContext.create(store, blobs, config.settings)
        state["ctx"] = ctx
        router = build_router(ctx)
        router.observers.append(metrics.observe_request)
        if config.ui:
            app.ui = build_ui(router)
        state["stops"] = [await service(router) for service in config.services]
        return router

    async def shutdown() -> None:
        for stop in reversed(app.state.get("stops", [])):
            await stop()
        if "store" in app.state:
            await app.state["store"].close()

    async def ready() -> bool:
        store: Store | None = app.state.get("store")
        if store is None:
            return False
        await store.ping()
        return True

    app = HttpAdapter(
        startup,
        shutdown,
        max_body=config.settings.max_body,
        ready=ready,
        metrics=lambda: (metrics.render(), CONTENT_TYPE),
    )
    return app


def _uvicorn_config(config: ServerConfig, app: Any, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=config.access_log,
        # "auto" picks httptools and uvloop when installed (both are measurably faster)
        http="auto",
        loop="auto",
        # websockets (deviceconnect): wsproto, pure Python; messages are capped per route again
        ws="wsproto",
        ws_max_size=1 << 20,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        backlog=2048,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        timeout_keep_alive=30,
    )


def uvicorn_server(config: ServerConfig) -> uvicorn.Server:
    """The server, not started: ``run()`` serves until ``should_exit`` is set (or, in the main
    thread, SIGINT/SIGTERM), then answers what is in flight and stops the services."""
    return uvicorn.Server(_uvicorn_config(config, create_app(config), config.port))


def serve(config: ServerConfig) -> None:
    """Run in the foreground until interrupted (``meshota server``)."""
    server = uvicorn_server(config)
    server.run()
    if not server.started:
        raise RuntimeError("server failed to start")


class BackgroundServer:
    """uvicorn in a thread on a free loopback port; for tests and benchmarks.

    >>> with BackgroundServer(ServerConfig(...)) as srv: srv.url
    """

    def __init__(
        self, config: ServerConfig, *, middleware: Callable[[ASGIApp], ASGIApp] | None = None
    ) -> None:
        self.config = config
        self.app = create_app(config)
        served: Any = middleware(self.app) if middleware is not None else self.app
        self._server = uvicorn.Server(_uvicorn_config(config, served, config.port))
        self._thread = threading.Thread(target=self._server.run, name="http-server", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", [])
        for srv in servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return self.config.port

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def context(self) -> ApiContext:
        ctx: ApiContext = self.app.state["ctx"]
        return ctx

    def start(self) -> BackgroundServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server failed to start")
            self._thread.join(0.02)
        return self

    def run_coroutine(self, coro: Any) -> Any:
        """Run ``coro`` in the server's event loop (where the store lives) and wait for it."""
        loop = self._loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = self.app.state["loop"]
        assert self.loop is not None
        return self.loop

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
