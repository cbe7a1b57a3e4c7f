"""Free ports for local servers: outside the ephemeral range, unbound on every address, never handed out twice."""

from __future__ import annotations

import socket

from textclf.ports import LINUX_DEFAULT_EPHEMERAL, bindable, ephemeral_range, free_port


def test_free_ports_are_outside_the_ephemeral_range_distinct_and_bindable_on_every_address():
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port <= 65535 and not low <= port <= high for port in ports)
    for port in ports[:5]:  # the server binds 0.0.0.0, as KServe's does
        with socket.socket() as server:
            server.bind(("0.0.0.0", port))


def test_a_port_something_listens_on_is_not_bindable():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not bindable(listener.getsockname()[1])


def test_the_ephemeral_range_is_read_from_the_kernel_and_falls_back_to_linux_defaults(tmp_path):
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t50000\n")
    assert ephemeral_range(setting) == (40000, 50000)
    setting.write_text("garbage")
    assert ephemeral_range(setting) == LINUX_DEFAULT_EPHEMERAL
    assert ephemeral_range(tmp_path / "missing") == LINUX_DEFAULT_EPHEMERAL
