"""What the soak run reads from /proc: a process tree, its memory (PSS from
smaps_rollup), and which TCP connections a process holds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# /proc/net/tcp states
ESTABLISHED, SYN_RECV, CLOSE_WAIT = "01", "03", "08"
STATE_NAMES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
               "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
               "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, …]; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_group(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[2]) if fields is not None else None


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                out.append(int(entry.name))
    return sorted(out)


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    for _ in range(10_000):  # bounded walk
        if not todo:
            break
        current = todo.pop()
        if alive(current):
            out.append(current)
            todo.extend(children(current))
    return out


@dataclass
class ProcessMemory:
    pid: int
    pss_mb: float
    rss_mb: float
    fds: int


def memory(pids: list[int]) -> list[ProcessMemory]:
    out = []
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        out.append(ProcessMemory(pid, _kb(rollup, "Pss:") / 1024, _kb(rollup, "Rss:") / 1024, fds))
    return out


def _kb(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class TcpEntry:
    local_port: int
    remote_port: int
    state: str
    inode: int


LOOPBACK = ("0100007F:", "0000000000000000FFFF00000100007F:")  # 127.0.0.1, and as IPv6 maps it (gRPC)


def tcp_table() -> list[TcpEntry]:
    """Every TCP socket on 127.0.0.1 (the soak runs on loopback only), from
    /proc/net/tcp and /proc/net/tcp6 (gRPC's sockets are IPv6 with mapped addresses)."""
    out: list[TcpEntry] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or not fields[1].startswith(LOOPBACK):
                continue
            local, remote = fields[1], fields[2]
            out.append(TcpEntry(int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                                fields[3], int(fields[9])))
    return out


def socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def connections_of(pid: int, server_ports: set[int]) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """The (server port, client port) pairs of connections ``pid`` holds on
    ``server_ports``, and those established but not yet accepted by any process
    (inode 0: in some listener's accept queue)."""
    inodes = socket_inodes(pid)
    held, queued = set(), set()
    for entry in tcp_table():
        if entry.local_port not in server_ports or entry.state == "0A":
            continue
        if entry.inode and entry.inode in inodes:
            held.add((entry.local_port, entry.remote_port))
        elif entry.inode == 0 and entry.state in (ESTABLISHED, SYN_RECV):
            queued.add((entry.local_port, entry.remote_port))
    return held, queued


def server_socket_states(pids: list[int], server_ports: set[int]) -> dict[str, int]:
    """States of the connections the server's processes hold on its ports."""
    inodes: set[int] = set()
    for pid in pids:
        inodes |= socket_inodes(pid)
    counts: dict[str, int] = {}
    for entry in tcp_table():
        if entry.local_port in server_ports and entry.inode in inodes and entry.state != "0A":
            name = STATE_NAMES.get(entry.state, entry.state)
            counts[name] = counts.get(name, 0) + 1
    return counts
