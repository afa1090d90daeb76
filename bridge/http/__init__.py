"""HTTP adapter: an ASGI app around the routing table, served by uvicorn (optional HTTPS)."""

from ._app import ASGIApp, HttpAdapter
from ._server import BackgroundServer, ServerConfig, create_app, serve, uvicorn_server

__all__ = [
    "ASGIApp",
    "BackgroundServer",
    "HttpAdapter",
    "ServerConfig",
    "create_app",
    "serve",
    "uvicorn_server",
]
