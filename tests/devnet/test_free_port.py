"""Servers the stack starts listen below the kernel's range for outgoing connections, where no
client connection can take their port between the check and the server's bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devnet.local import free_port, outgoing_port_range_start


def test_ports_come_from_below_the_outgoing_connection_range() -> None:
    end = outgoing_port_range_start()
    ports = [free_port() for _ in range(50)]
    assert all(20000 <= port < end for port in ports)
    assert len(set(ports)) == len(ports)  # never the same port twice to one process


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # A range of one port that is taken: free_port must refuse it rather than return it.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr("devnet.local._LISTEN_PORTS_FROM", port - 999)
        monkeypatch.setattr("devnet.local.outgoing_port_range_start", lambda: port + 1)
        monkeypatch.setattr("devnet.local._ports_handed_out", set(range(port - 999, port)))
        with pytest.raises(RuntimeError, match="no free port"):
            free_port()


def test_the_range_start_is_read_from_the_kernel(tmp_path: Path) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("40000\t60999\n")
    assert outgoing_port_range_start(range_file) == 40000
    assert outgoing_port_range_start(tmp_path / "missing") == 32768
