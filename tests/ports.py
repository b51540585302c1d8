"""Loopback ports for tests: one helper instead of a copy per test module."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port that was free a moment ago (bound, then closed): for a listener a peer opens
    itself, or — left unused — a port nothing listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def refused_port() -> int:
    """A loopback port nothing listens on: connections to it are refused (a port bound and released a moment
    ago; another process could take it in between, which loopback tests accept)."""
    return free_port()
