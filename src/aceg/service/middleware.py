"""ASGI middleware of the service: Host header, API key and request body size, checked
before the body is read. Refusals are the service's JSON error bodies
(:func:`error_response`)."""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse

API_KEY_HEADER = "X-API-Key"

#: Host names always accepted in the Host header: this machine's loopback names.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    """The JSON error response; the message is forced onto one line (it may quote request
    text, e.g. a percent-decoded path) and capped at 500 characters."""
    one_line = "".join(c if c.isprintable() else " " for c in message)[:500]
    return JSONResponse({"error": code, "message": one_line}, status_code=status, headers=headers)


class ApiKeyMiddleware:
    """ASGI middleware: 401 JSON unless the request carries the API key."""

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    def _authorised(self, scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"x-api-key" and hmac.compare_digest(value, self.key):
                return True
            if name == b"authorization" and value[:7].lower() == b"bearer " and \
                    hmac.compare_digest(value[7:].strip(), self.key):
                return True
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(401, "unauthorized",
                          f"missing or wrong API key (send it in the {API_KEY_HEADER} header)",
                          headers={"WWW-Authenticate": "ApiKey"})
        await response(scope, receive, send)


class BodyLimitMiddleware:
    """ASGI middleware: 413 JSON for a request body larger than ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is read; a
    body without one (chunked) is counted as it streams and refused as soon as it goes
    over. The app then sees a disconnect and whatever it sends is dropped.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "bad_request", "invalid Content-Length header")(
                        scope, receive, send)
                    return
                if declared > self.limit:
                    await self._too_large(scope, receive, send)
                    return
        state = {"received": 0, "refused": False, "started": False}

        async def limited_receive():
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.limit and not state["started"]:
                    state["refused"] = True
                    await self._too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise

    async def _too_large(self, scope, receive, send):
        await error_response(413, "request_too_large",
                     f"request body is larger than the limit of {self.limit} bytes")(
            scope, receive, send)


def host_name(value: str) -> str | None:
    """The host of a Host header value ``name[:port]`` or ``[v6][:port]``, lower-case and
    without brackets; None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
    else:
        host, _, rest = value.partition(":")
        rest = ":" + rest if _ else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    if not host or any(c.isspace() or c in "/@?#\\" for c in host):
        return None
    return host


def normalise_host(name: str) -> str:
    """An allowed-host entry as :func:`host_name` returns hosts (``[::1]`` -> ``::1``)."""
    return name.strip().lower().removeprefix("[").removesuffix("]")


class HostCheckMiddleware:
    """ASGI middleware: 400 JSON unless the Host header names an allowed host (``"*"``
    allows any). Guards against DNS rebinding: a web page of another site whose name was
    re-pointed at this server still sends its own name as Host."""

    def __init__(self, app, allowed: set[str]) -> None:
        self.app = app
        self.allowed = {normalise_host(h) for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", []) if k == b"host"]
        host = host_name(values[0].decode("latin-1")) if len(values) == 1 else None
        if host is not None and host in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = values[0].decode("latin-1")[:100] if values else "missing"
        response = error_response(
            400, "host_not_allowed",
            f"Host header {shown!r} is not a name of this server (the server's --allowed-host"
            " option lists the accepted names)")
        await response(scope, receive, send)
