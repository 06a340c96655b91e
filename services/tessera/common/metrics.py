"""Prometheus ``/metrics`` endpoint and shared metric helpers."""

from __future__ import annotations

from prometheus_client import start_http_server


def serve(host: str, port: int) -> int:
    """Serve the default registry over HTTP on ``host:port``; return the bound port."""
    httpd, _thread = start_http_server(port, addr=host)
    return int(httpd.server_port)
