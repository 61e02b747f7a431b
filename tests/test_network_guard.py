"""The autouse guard in conftest.py: tests may reach the loopback only."""

from __future__ import annotations

import socket

import pytest


@pytest.mark.parametrize("address", [("example.com", 443), ("10.255.255.1", 80), ("8.8.8.8", 53)])
def test_other_hosts_are_blocked(address):
    with pytest.raises(RuntimeError, match="blocked in tests"):
        socket.create_connection(address, timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(RuntimeError, match="blocked in tests"):
        sock.connect(address)


def test_loopback_is_allowed():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            with socket.create_connection((host, port), timeout=5) as client:
                conn, _ = server.accept()
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"
                conn.close()
