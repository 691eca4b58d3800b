"""The dashboard's defences against other web pages in the user's own browser (pure functions).

Identity on loopback is ambient, as a cookie is: any page the user's browser shows could send a request to
http://localhost:8765 and it would arrive on a connection the user owns. So:
- the Host header must name this server (localhost, 127.0.0.1 or [::1], with its port): a DNS-rebinding page
  (evil.example resolving to 127.0.0.1) sends its own name and is refused, so it can't read our pages;
- a POST must come from one of those origins (Origin, or Referer where a browser sends no Origin) and carry
  the form's token: HMAC-SHA256(key made at start, uid), which only a page of ours can have read.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset(f"{name}:{port}" for name in LOOPBACK_NAMES)


def host_ok(host: str, hosts: frozenset[str]) -> bool:
    return host.strip().lower() in hosts


def origin_host(url: str) -> str:
    """'http://localhost:8765/x' -> 'localhost:8765' (http only: the dashboard serves no https)."""
    try:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.username or parts.password:
            return ""
        return parts.netloc.lower()
    except ValueError:
        return ""


def post_refusal(origin: str | None, referer: str | None, hosts: frozenset[str]) -> str:
    """Why a POST is refused on its origin ("" if it isn't)."""
    if origin is not None and origin != "null":
        return "" if origin_host(origin) in hosts else "refused: this form was sent from another site"
    if referer:
        return "" if origin_host(referer) in hosts else "refused: this form was sent from another site"
    return "refused: the browser said neither where this form came from (Origin) nor which page (Referer)"


def token(key: bytes, uid: int) -> str:
    return hmac.new(key, f"gpusched-web csrf {uid}".encode(), hashlib.sha256).hexdigest()


def token_ok(key: bytes, uid: int | None, given: str) -> bool:
    return uid is not None and hmac.compare_digest(token(key, uid), given)
