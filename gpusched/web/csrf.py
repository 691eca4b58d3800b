"""The dashboard's defences against other web pages in the user's own browser (pure functions).

Identity on loopback is ambient, as a cookie is: any page the user's browser shows could send a request to
http://localhost:8765 and it would arrive on a connection the user owns. So:
- the Host header must name this server (localhost, 127.0.0.1 or [::1], with its port): a DNS-rebinding page
  (evil.example resolving to 127.0.0.1) sends its own name and is refused, so it can't read our pages;
- a POST must come from one of those origins (Origin, or Referer where a browser sends no Origin) and carry
  the form's token: HMAC-SHA256(key made at start, uid), which only a page of ours can have read.

Beyond loopback (a [web] listen address that is not, served over HTTPS, docs/web.md) the same checks hold
with the names it answers to there (`[web] names`, the machine's host names, the listen addresses) and
https origins; a signed-in session's token is an HMAC of its session id, the sign-in form's one of a random
cookie set with the form (so another site can't sign a browser in as someone else either).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def allowed_hosts(port: int, far_names: tuple[str, ...] = ()) -> frozenset[str]:
    """Host headers answered: the loopback names and `far_names` (beyond loopback), with the port."""
    return frozenset(f"{name}:{port}" for name in LOOPBACK_NAMES + far_names)


def allowed_origins(port: int, far_names: tuple[str, ...] = (), loopback_schemes: tuple[str, ...] = ("http",)
                    ) -> frozenset[str]:
    """The origins of our own pages: the loopback names over `loopback_schemes` (https too where a wildcard
    listener, 0.0.0.0 or ::, serves loopback with TLS), the names beyond loopback over https."""
    return frozenset([f"{scheme}://{name}:{port}" for scheme in loopback_schemes for name in LOOPBACK_NAMES]
                     + [f"https://{name}:{port}" for name in far_names])


def far_names(names: tuple[str, ...], listen: tuple[str, ...]) -> tuple[str, ...]:
    """The names a dashboard listening beyond loopback answers to: `names` and its specific listen addresses
    (an IPv6 one in brackets, as a Host header writes it)."""
    out = [n.lower() for n in names]
    for a in listen:
        ip = ipaddress.ip_address(a)
        if not ip.is_loopback and not ip.is_unspecified:
            out.append(f"[{ip}]" if ip.version == 6 else str(ip))
    return tuple(dict.fromkeys(out))


def host_ok(host: str, hosts: frozenset[str]) -> bool:
    return host.strip().lower() in hosts


def origin_of(url: str) -> str:
    """'http://localhost:8765/x' -> 'http://localhost:8765' ("" for what is not a plain http(s) URL)."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.username or parts.password:
            return ""
        return f"{parts.scheme}://{parts.netloc.lower()}"
    except ValueError:
        return ""


def post_refusal(origin: str | None, referer: str | None, origins: frozenset[str]) -> str:
    """Why a POST is refused on its origin ("" if it isn't)."""
    if origin is not None and origin != "null":
        return "" if origin_of(origin) in origins else "refused: this form was sent from another site"
    if referer:
        return "" if origin_of(referer) in origins else "refused: this form was sent from another site"
    return "refused: the browser said neither where this form came from (Origin) nor which page (Referer)"


def token(key: bytes, subject: int | str) -> str:
    """The form token of `subject`: a loopback viewer's uid, or a string (a session's id, a sign-in form's
    cookie) that names its kind."""
    return hmac.new(key, f"gpusched-web csrf {subject}".encode(), hashlib.sha256).hexdigest()


def token_ok(key: bytes, subject: int | str | None, given: str) -> bool:
    return subject is not None and subject != "" and hmac.compare_digest(token(key, subject), given)
