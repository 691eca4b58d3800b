"""Who is on the other end of a loopback TCP connection, from the kernel's socket table.

A connection to 127.0.0.1 or ::1 has both ends on this machine, so the client's socket is in the kernel's
table too (/proc/net/tcp and tcp6, world-readable), with the uid that created it: for `ssh -L` it is the
user's own sshd session process, for a local browser the user. The client's socket is the one whose *local*
address is the server's view of the peer and whose remote address is the server's own address. Only an
ESTABLISHED socket with an inode counts: a closed one (TIME_WAIT, orphaned FIN_WAIT) reports uid 0 and
belongs to no one, so it gives no identity rather than root's.

No race with port reuse: the lookup is made while the server still holds its end of the connection, so the
4-tuple can't belong to any other connection at that moment. Anything uncertain answers None (the public
view).
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Iterable

ESTABLISHED = "01"
TABLES = {4: "/proc/net/tcp", 6: "/proc/net/tcp6"}

Endpoint = tuple[str, int]        # (address as ipaddress writes it, port)


def decode_address(hexaddr: str) -> Endpoint:
    """'0100007F:1F90' -> ('127.0.0.1', 8080). The kernel prints the address as 32-bit words in the machine's
    byte order (%08X of each __be32 read natively), the port as a plain number."""
    addr, port = hexaddr.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) not in (4, 16):
        raise ValueError(f"not an address: {hexaddr!r}")
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def parse_table(lines: Iterable[str]) -> Iterable[tuple[Endpoint, Endpoint, str, int, int]]:
    """Each socket of a /proc/net/tcp{,6} text: (local, remote, state, uid, inode). Malformed lines are
    skipped."""
    for line in lines:
        f = line.split()
        if len(f) < 10 or not f[0].endswith(":"):
            continue                                  # the header
        try:
            yield decode_address(f[1]), decode_address(f[2]), f[3], int(f[7]), int(f[9])
        except ValueError:
            continue


def normal(host: str) -> str:
    """An address as the table's decoding writes it (IPv4-mapped IPv6 as IPv4; scope ids dropped)."""
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(normal(host)).is_loopback
    except ValueError:
        return False


def find_owner(lines: Iterable[str], peer: Endpoint, server: Endpoint) -> int | None:
    """The uid owning the client end of the connection between `peer` and `server` (the server's accepted
    socket's remote and local ends), or None when no established socket with an owner is that end."""
    for local, remote, state, uid, inode in parse_table(lines):
        if local == peer and remote == server:
            if state == ESTABLISHED and inode != 0:
                return uid
            return None
    return None


def owner_uid(peername: tuple, sockname: tuple, tables: dict[int, str] = TABLES) -> int | None:
    """The uid of the process that made this loopback TCP connection (peername, sockname: the accepted
    socket's getpeername() and getsockname()), or None: not loopback, or not found."""
    try:
        peer = (normal(peername[0]), int(peername[1]))
        server = (normal(sockname[0]), int(sockname[1]))
    except (ValueError, IndexError, TypeError):
        return None
    if not (is_loopback(peer[0]) and is_loopback(server[0])):
        return None
    # an IPv4 connection's client may be an IPv6 socket connected to ::ffff:127.0.0.1 (dual-stack programs): it
    # is listed in tcp6, with the mapped addresses that decode_address writes as IPv4
    versions = (4, 6) if ipaddress.ip_address(peer[0]).version == 4 else (6,)
    for version in versions:
        try:
            with open(tables[version]) as f:
                uid = find_owner(f, peer, server)
        except OSError:
            continue
        if uid is not None:
            return uid
    return None
