"""This machine's ports, addresses and processes, as the embedded server and its route need them."""

from __future__ import annotations

import socket
from pathlib import Path


def advertised_host(host: str) -> str:
    """The address other machines (and containers) reach this server on."""
    if host not in ("0.0.0.0", "::"):
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; this picks the outgoing interface
            return probe.getsockname()[0]
        except OSError:
            pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def local_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def process_identity(pid: int) -> str | None:
    """Which process `pid` is, whatever the wall clock did since: this boot's id and the clock tick,
    counted from boot, that the process started at (Linux). None where /proc does not tell.

    psutil's create_time is boot time plus that tick by the wall clock, so a clock stepped by NTP, a
    resume or a VM restore moves it, and a server running for days would look like another process."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return f"{boot}/{fields[19]}" if len(fields) > 19 else None  # field 22, starttime


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def can_listen(port: int) -> bool:
    """Can a server listen on `port`? Nothing listening there is not enough: a port in the ephemeral
    range may be held by an outgoing connection, and binding then fails."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp listens
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
