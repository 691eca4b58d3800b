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

How: the kernel is asked for exactly that socket by its 4-tuple over sock_diag netlink (what `ss` uses; any
user may ask), which costs the same however many sockets the machine has. Reading the whole table instead
costs a parse of every socket, TIME_WAIT ones included, per connection: a user who churns connections
would make each lookup slower for everyone. The table is the fallback where netlink is refused (an older
unit's RestrictAddressFamilies=, a sandbox without sock_diag).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from typing import Iterable

ESTABLISHED = "01"
TABLES = {4: "/proc/net/tcp", 6: "/proc/net/tcp6"}

# sock_diag (linux/sock_diag.h, linux/inet_diag.h)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NLMSG_HDR = struct.Struct("=IHHII")          # len, type, flags, seq, pid
DIAG_REQ = struct.Struct("=BBBxI")           # family, protocol, ext, pad, states: then an inet_diag_sockid
# family, state, timer, retrans, sockid (skipped), expires, rqueue, wqueue, uid, inode
DIAG_MSG = struct.Struct("=BBBB48xIIIII")
TCP_ESTABLISHED = 1
NOCOOKIE = 0xFFFFFFFF

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


class Unavailable(Exception):
    """sock_diag can't be asked here (the address family refused, or no such netlink protocol)."""


def diag_request(family: int, local: Endpoint, remote: Endpoint, seq: int = 1) -> bytes:
    """The sock_diag request for the one TCP socket whose own end is `local` and whose peer is `remote`."""
    def address(host: str) -> bytes:
        return socket.inet_pton(family, host).ljust(16, b"\0")
    sockid = (struct.pack("!HH", local[1], remote[1]) + address(local[0]) + address(remote[0])
              + struct.pack("=III", 0, NOCOOKIE, NOCOOKIE))
    body = DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + sockid
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


def diag_owner(reply: bytes) -> int | None:
    """The uid in a sock_diag reply, when it describes an established socket with an inode; None for an
    error (no such socket), a closed or orphaned socket, or anything malformed."""
    if len(reply) < NLMSG_HDR.size:
        return None
    _, kind, _, _, _ = NLMSG_HDR.unpack_from(reply)
    if kind != SOCK_DIAG_BY_FAMILY or len(reply) < NLMSG_HDR.size + DIAG_MSG.size:
        return None
    _, state, _, _, _, _, _, uid, inode = DIAG_MSG.unpack_from(reply, NLMSG_HDR.size)
    return uid if state == TCP_ESTABLISHED and inode != 0 else None


def ask_kernel(peer: Endpoint, server: Endpoint) -> int | None:
    """The owner of the client socket (local end `peer`, remote end `server`) by sock_diag; Unavailable when
    netlink can't be used here. An IPv4 connection's client may be a dual-stack IPv6 socket: the kernel finds
    it by the IPv4 4-tuple too."""
    family = socket.AF_INET6 if ipaddress.ip_address(peer[0]).version == 6 else socket.AF_INET
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except OSError as e:
        raise Unavailable(str(e)) from None
    with s:
        try:
            s.settimeout(1.0)
            s.sendto(diag_request(family, peer, server), (0, 0))
            return diag_owner(s.recv(8192))
        except OSError as e:
            raise Unavailable(str(e)) from None


def owner_uid(peername: tuple, sockname: tuple, tables: dict[int, str] = TABLES,
              kernel=ask_kernel) -> int | None:
    """The uid of the process that made this loopback TCP connection (peername, sockname: the accepted
    socket's getpeername() and getsockname()), or None: not loopback, or not found."""
    try:
        peer = (normal(peername[0]), int(peername[1]))
        server = (normal(sockname[0]), int(sockname[1]))
    except (ValueError, IndexError, TypeError):
        return None
    if not (is_loopback(peer[0]) and is_loopback(server[0])):
        return None
    if kernel is not None:
        try:
            return kernel(peer, server)
        except Unavailable:
            pass
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
