"""The asyncio client: REST on aiohttp, gRPC on grpc.aio; the same calls,
settings and errors as :class:`servekit.Client`."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson

import servekit.client.codec as codec
from servekit.client._base import Base, index_entries, model_path
from servekit.client._sync import _grpc_auth, _grpc_error, _need, _pb, _quote
from servekit.client.codec import InferResult
from servekit.client.errors import (
    ClientError,
    ClientTimeout,
    ModelNotFound,
    ServerError,
    ServerUnreachable,
    ServiceUnavailable,
    from_http,
)


class AsyncClient(Base):
    """:class:`servekit.Client` for asyncio::

        async with AsyncClient("http://127.0.0.1:8080") as client:
            outputs = await client.infer("iris", rows)
    """

    def __init__(self, url: str = "http://127.0.0.1:8080", **settings: Any) -> None:
        super().__init__(url, **settings)
        self._session: Any = None
        self._channel: Any = None
        self._stub: Any = None

    def _http(self) -> Any:
        if self._session is None:
            aiohttp = _need("aiohttp")

            ssl: Any = None
            if self.address.tls:
                import ssl as ssl_module

                if isinstance(self.verify, str):
                    ssl = ssl_module.create_default_context(cafile=self.verify)
                elif not self.verify:
                    ssl = False
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout,
                                            sock_read=self.timeout)
            connector = aiohttp.TCPConnector(limit=32, ssl=ssl)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector,
                                                  auto_decompress=True)
        return self._session

    async def _request(self, method: str, path: str, body: bytes | None = None, *,
                       headers: dict[str, str] | None = None, idempotent: bool = True,
                       accept: tuple[int, ...] = ()) -> tuple[int, Any, bytes]:
        aiohttp = _need("aiohttp")

        url = self.address.http_base + path
        all_headers = {**self.headers, **(headers or {})}
        attempt = 0
        while True:
            self.last_attempts = attempt + 1
            error: ClientError
            try:
                async with self._http().request(method, url, data=body, headers=all_headers,
                                                allow_redirects=False) as answer:
                    data = await answer.read()
                    if 200 <= answer.status < 300 or answer.status in accept:
                        return answer.status, answer.headers, data
                    error = from_http(answer.status, data, answer.headers.get("retry-after"))
            except aiohttp.ServerTimeoutError:
                error = ClientTimeout(f"{method} {path}: no answer within {self.timeout:g} s")
            except (aiohttp.ClientConnectionError, OSError) as exc:
                error = ServerUnreachable(f"{method} {url}: {exc}")
            except TimeoutError:
                error = ClientTimeout(f"{method} {path}: no answer within {self.timeout:g} s")
            wait = self.should_retry(error, attempt, idempotent)
            if wait is None:
                raise error
            await asyncio.sleep(wait)
            attempt += 1

    async def _json(self, method: str, path: str, body: Any = None, **options: Any) -> Any:
        raw = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if raw is not None else {}
        headers.update(options.pop("headers", {}))
        _, _, data = await self._request(method, path, raw, headers=headers, **options)
        if not data.strip():
            return {}
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ServerError(f"{method} {path}: the answer is not JSON ({exc})") from None

    async def _grpc_stub(self) -> Any:
        if self._stub is None:
            import grpc

            from servekit.protocols.generated import grpc_predict_v2_pb2_grpc as pb_grpc

            options = [("grpc.max_send_message_length", self.max_message_size),
                       ("grpc.max_receive_message_length", self.max_message_size)]
            if self.address.tls:
                root = open(self.verify, "rb").read() if isinstance(self.verify, str) else None  # noqa: SIM115
                channel = grpc.aio.secure_channel(self.address.host_port, grpc.ssl_channel_credentials(root),
                                                  options)
            else:
                channel = grpc.aio.insecure_channel(self.address.host_port, options)
            try:
                await asyncio.wait_for(channel.channel_ready(), self.connect_timeout)
            except TimeoutError:
                await channel.close()
                raise ServerUnreachable(f"could not connect to {self.address.host_port} (gRPC) within "
                                        f"{self.connect_timeout:g} s") from None
            self._channel = channel
            self._stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def _rpc(self, method: str, request: Any, *, idempotent: bool = True,
                   metadata: list[tuple[str, str]] | None = None) -> Any:
        import grpc

        extra = [(k.lower(), v) for k, v in self.headers.items()] + (metadata or [])
        attempt = 0
        while True:
            self.last_attempts = attempt + 1
            error: ClientError
            try:
                call = getattr(await self._grpc_stub(), method)
                return await call(request, timeout=self.timeout, metadata=extra or None)
            except grpc.RpcError as exc:
                error = _grpc_error(exc)
            except ServerUnreachable as exc:
                error = exc
            wait = self.should_retry(error, attempt, idempotent)
            if wait is None:
                raise error
            await asyncio.sleep(wait)
            attempt += 1

    # -- health and metadata -----------------------------------------------------------
    async def live(self) -> bool:
        if self.protocol == "grpc":
            return bool((await self._rpc("ServerLive", _pb().ServerLiveRequest())).live)
        status, _, _ = await self._request("GET", "/v2/health/live", accept=(503,))
        return status == 200

    async def ready(self) -> bool:
        if self.protocol == "grpc":
            return bool((await self._rpc("ServerReady", _pb().ServerReadyRequest())).ready)
        status, _, _ = await self._request("GET", "/v2/health/ready", accept=(503,))
        return status == 200

    async def model_ready(self, model: str, version: str | None = None) -> bool:
        if self.protocol == "grpc":
            try:
                answer = await self._rpc("ModelReady", _pb().ModelReadyRequest(name=model, version=version or ""))
            except (ModelNotFound, ServiceUnavailable):
                return False
            return bool(answer.ready)
        status, _, _ = await self._request("GET", model_path(model, version, "/ready"), accept=(404, 503))
        return status == 200

    async def server_metadata(self) -> dict[str, Any]:
        if self.protocol == "grpc":
            answer = await self._rpc("ServerMetadata", _pb().ServerMetadataRequest())
            return {"name": answer.name, "version": answer.version, "extensions": list(answer.extensions)}
        return dict(await self._json("GET", "/v2"))

    async def metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        if self.protocol == "grpc":
            answer = await self._rpc("ModelMetadata", _pb().ModelMetadataRequest(name=model, version=version or ""))
            document = codec.grpc_metadata(answer)
        else:
            document = dict(await self._json("GET", model_path(model, version)))
        self.remember_inputs(model, version, document)
        return document

    async def models(self, ready: bool = False) -> list[dict[str, Any]]:
        if self.protocol == "grpc":
            answer = await self._rpc("RepositoryIndex", _pb().RepositoryIndexRequest(ready=ready))
            return [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}
                    for m in answer.models]
        return index_entries(await self._json("POST", "/v2/repository/index", {"ready": ready} if ready else {}))

    async def load(self, model: str) -> dict[str, Any]:
        self.forget(model)
        if self.protocol == "grpc":
            await self._rpc("RepositoryModelLoad", _pb().RepositoryModelLoadRequest(model_name=model),
                            idempotent=False, metadata=_grpc_auth(self.token))
            return {"name": model}
        return dict(await self._json("POST", f"/v2/repository/models/{_quote(model)}/load",
                                     headers=self.auth_headers(), idempotent=False))

    async def unload(self, model: str) -> dict[str, Any]:
        self.forget(model)
        if self.protocol == "grpc":
            await self._rpc("RepositoryModelUnload", _pb().RepositoryModelUnloadRequest(model_name=model),
                            idempotent=False, metadata=_grpc_auth(self.token))
            return {"name": model}
        return dict(await self._json("POST", f"/v2/repository/models/{_quote(model)}/unload",
                                     headers=self.auth_headers(), idempotent=False))

    # -- inference ------------------------------------------------------------------------
    async def infer(self, model: str, inputs: Any, *, model_version: str | None = None,
                    outputs: list[str] | None = None, parameters: dict[str, Any] | None = None,
                    request_id: str | None = None) -> dict[str, np.ndarray]:
        result = await self.infer_result(model, inputs, model_version=model_version, outputs=outputs,
                                         parameters=parameters, request_id=request_id)
        return result.outputs

    async def infer_result(self, model: str, inputs: Any, *, model_version: str | None = None,
                           outputs: list[str] | None = None, parameters: dict[str, Any] | None = None,
                           request_id: str | None = None) -> InferResult:
        declared = None
        if self.wants_metadata(inputs):
            declared = self.cached_inputs(model, model_version)
            if declared is None:
                declared = self.remember_inputs(model, model_version, await self.metadata(model, model_version))
        arrays = self.prepare(inputs, declared)
        if self.protocol == "grpc":
            message = codec.grpc_request(model, model_version, arrays, outputs=outputs,
                                         parameters=parameters, request_id=request_id)
            return codec.grpc_response(await self._rpc("ModelInfer", message, idempotent=False))
        body, headers = self.infer_rest_body(arrays, outputs, parameters, request_id)
        _, answer_headers, data = await self._request("POST", model_path(model, model_version, "/infer"), body,
                                                      headers=headers, idempotent=False)
        return codec.rest_response(data, answer_headers.get(codec.HEADER_LENGTH))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


__all__ = ["AsyncClient"]
