"""The throwaway servers really start, enforce passwords, and answer."""

from __future__ import annotations

import subprocess

import pytest

from tests.services import PostgresCluster, RedisServer


def test_postgres_requires_password(pg: PostgresCluster) -> None:
    assert pg.psql("select 1") == "1\n"
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(
            [
                "psql",
                "-X",
                "-w",
                "-h",
                pg.host,
                "-p",
                str(pg.port),
                "-U",
                "postgres",
                "-c",
                "select 1",
            ],
            check=True,
            capture_output=True,
            env={"PATH": "/usr/bin:/bin"},
        )


def test_redis_answers_ping(redis: RedisServer) -> None:
    import socket

    with socket.create_connection((redis.host, redis.port), 2) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16) == b"+PONG\r\n"
