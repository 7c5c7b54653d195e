"""The floor: a bare ASGI app that reads the request and returns a constant V2
response, served on the same stack as servekit (uvicorn, httptools, uvloop)."""

from __future__ import annotations

from typing import Any

BODY = (b'{"model_name":"bare","model_version":"v1","outputs":[{"name":"predict",'
        b'"shape":[1],"datatype":"INT64","data":[0]}]}')
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole request body, as a server must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
