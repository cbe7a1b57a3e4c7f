"""Free TCP ports for the servers the product and its tests start on this machine (benchmarks, the local
TrainJob's rendezvous, test servers).

Asking the kernel for port 0 and handing that number to a server that binds it seconds later is a race: the number
comes from the kernel's ephemeral range, the same range every outgoing connection draws its local port from, so any
client (a readiness poll included) can take it before the server binds, and the server dies with ``EADDRINUSE``.
:func:`free_port` therefore picks outside the ephemeral range, checks that nothing is bound to the port on any
address (servers such as KServe's bind ``0.0.0.0``), and never hands out the same number twice in one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_EPHEMERAL = (32768, 60999)
FIRST_UNPRIVILEGED = 1024

_handed_out: set[int] = set()
_lock = threading.Lock()
_random = random.SystemRandom()  # not the module-level generator, which tests seed


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range (inclusive); Linux's default where ``path`` cannot be read."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return LINUX_DEFAULT_EPHEMERAL
    return low, high


def bindable(port: int) -> bool:
    """Whether ``port`` can be bound on every address (``0.0.0.0``) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def free_port(attempts: int = 200) -> int:
    """A TCP port outside the ephemeral range that nothing is bound to on any address and that this process has
    not handed out before.

    Raises:
        RuntimeError: No such port within ``attempts`` random tries.
    """
    low, high = ephemeral_range()
    candidates = [(FIRST_UNPRIVILEGED, low - 1), (high + 1, 65535)]
    candidates = [(a, b) for a, b in candidates if a <= b]
    if not candidates:
        raise RuntimeError(f"the ephemeral port range {low}-{high} leaves no unprivileged port outside it")
    weights = [b - a + 1 for a, b in candidates]
    with _lock:
        for _ in range(attempts):
            a, b = _random.choices(candidates, weights=weights)[0]
            port = _random.randint(a, b)
            if port not in _handed_out and bindable(port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port outside the ephemeral range {low}-{high} after {attempts} tries")
