"""What another web page must not do to the explorer's server: the checks before any route runs.

A page on any site can make the user's browser send requests to ``127.0.0.1``: a "simple"
cross-site ``POST`` (``text/plain``, a form) goes out without asking, and DNS rebinding
points another name at this machine. :class:`Guard` refuses both with a JSON 403.
"""
from __future__ import annotations

import contextlib
import hmac
from http.cookies import CookieError, SimpleCookie

from starlette.responses import JSONResponse

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def token_cookie(host: str) -> str:
    """The secret's cookie name for the server at ``host`` (cookies ignore ports: one name per port)."""
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else ""
    return f"cnnlab_token_{port}" if port.isdigit() else "cnnlab_token"


class Guard:
    """ASGI middleware: what another web page must not do to this server, refused with a JSON 403.

    * ``Host`` must name the server (``allowed_hosts``; ``None``: any): a page on another site
      that makes the browser resolve its name to 127.0.0.1 (DNS rebinding) carries its own name.
    * A request that may change state (any method but GET, HEAD, OPTIONS) must come from the
      served page: its ``Origin``, when sent, is the served origin (``scheme://Host``), its
      ``Sec-Fetch-Site`` is not ``cross-site``, and it carries the server's secret, a random token
      that ``GET /`` sets as a cookie (``HttpOnly; SameSite=Strict``: a browser sends it with
      the page's own requests only, and no script can read it). The page's ``fetch`` calls send
      it without asking. JSON routes also refuse a body that is not ``application/json`` (415,
      :func:`.app.read_json_body`), which a page cannot send to another site without a CORS preflight,
      which this server never grants.
    """

    def __init__(self, app, allowed_hosts, secret):
        self.app, self.secret = app, secret
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    def __getattr__(self, name):                  # ``app.state`` and friends reach the wrapped application
        return getattr(self.app, name)

    def refusal(self, scope) -> str | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.allowed is not None and name not in self.allowed:
            return f"refused: the Host header {host!r} is not a served name ({', '.join(sorted(self.allowed))})"
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        served = f"{scope.get('scheme', 'http')}://{host}"
        if origin is not None and origin.lower() != served:
            return f"refused: a request from {origin} may not change this server's state; only its own page ({served}) may"
        if headers.get("sec-fetch-site") == "cross-site":
            return "refused: a request from another site may not change this server's state"
        cookies = SimpleCookie()
        with contextlib.suppress(CookieError):
            cookies.load(headers.get("cookie", ""))
        sent = cookies.get(token_cookie(host))
        if sent is None or not hmac.compare_digest(sent.value.encode(), self.secret.encode()):
            return ("refused: this request needs the server's token, which its page receives as a cookie; "
                    "open the page first")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            why = self.refusal(scope)
            if why:
                await JSONResponse({"error": why}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
