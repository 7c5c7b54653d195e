"""The blocking client: REST on urllib3's connection pool, gRPC on grpcio."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import orjson

import servekit.client.codec as codec
from servekit.client._base import Base, index_entries, model_path
from servekit.client.codec import InferResult
from servekit.client.errors import (
    ClientError,
    ClientTimeout,
    ModelNotFound,
    ServerError,
    ServerUnreachable,
    ServiceUnavailable,
    from_grpc,
    from_http,
)

T = TypeVar("T")


class Client(Base):
    """A V2 (Open Inference Protocol) client with numpy in and numpy out, for
    servekit, MLServer, Triton and KServe::

        with Client("http://127.0.0.1:8080") as client:
            client.infer("iris", {"x": rows})        # {"predict": array([...])}
            client.infer("iris", rows)               # the model's only input
        Client("http://127.0.0.1:8080", protocol="binary")   # Triton's binary tensors
        Client("grpc://127.0.0.1:8081")                      # gRPC

    Idempotent calls are retried (``retries``, exponential ``backoff``) when
    the server cannot be reached or is unavailable; ``infer`` only when the
    server answers 503 with Retry-After. Errors are
    :mod:`servekit.client.errors` classes carrying the server's message."""

    def __init__(self, url: str = "http://127.0.0.1:8080", **settings: Any) -> None:
        super().__init__(url, **settings)
        self._pool: Any = None
        self._channel: Any = None
        self._stub: Any = None

    # -- transports ----------------------------------------------------------------
    def _http(self) -> Any:
        if self._pool is None:
            urllib3 = _need("urllib3")

            timeout = urllib3.Timeout(connect=self.connect_timeout, read=self.timeout)
            options: dict[str, Any] = {"timeout": timeout, "retries": False, "maxsize": 8}
            if self.address.tls:
                if isinstance(self.verify, str):
                    options["ca_certs"] = self.verify
                elif not self.verify:
                    options["cert_reqs"] = "CERT_NONE"
            self._pool = urllib3.PoolManager(**options)
        return self._pool

    def _request(self, method: str, path: str, body: bytes | None = None, *,
                 headers: dict[str, str] | None = None, idempotent: bool = True,
                 accept: tuple[int, ...] = ()) -> tuple[int, Any, bytes]:
        """(status, headers, body) of a 2xx answer or of a status in ``accept``;
        a typed error otherwise, after the retries the policy allows."""
        urllib3 = _need("urllib3")

        url = self.address.http_base + path
        all_headers = {**self.headers, **(headers or {})}
        attempt = 0
        while True:
            self.last_attempts = attempt + 1
            try:
                answer = self._http().request(method, url, body=body, headers=all_headers,
                                              preload_content=True, redirect=False)
                if 200 <= answer.status < 300 or answer.status in accept:
                    return answer.status, answer.headers, answer.data
                error = from_http(answer.status, answer.data, answer.headers.get("retry-after"))
            except urllib3.exceptions.NewConnectionError as exc:  # refused: a subclass of the timeout
                error = ServerUnreachable(f"{method} {url}: {_reason(exc)}")
            except urllib3.exceptions.ConnectTimeoutError as exc:
                error = ServerUnreachable(f"could not connect to {self.address.host_port} within "
                                          f"{self.connect_timeout:g} s ({exc})")
            except urllib3.exceptions.ReadTimeoutError:
                error = ClientTimeout(f"{method} {path}: no answer within {self.timeout:g} s")
            except urllib3.exceptions.HTTPError as exc:
                error = ServerUnreachable(f"{method} {url}: {_reason(exc)}")
            wait = self.should_retry(error, attempt, idempotent)
            if wait is None:
                raise error
            time.sleep(wait)
            attempt += 1

    def _json(self, method: str, path: str, body: Any = None, **options: Any) -> Any:
        raw = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if raw is not None else {}
        headers.update(options.pop("headers", {}))
        _, _, data = self._request(method, path, raw, headers=headers, **options)
        if not data.strip():
            return {}
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ServerError(f"{method} {path}: the answer is not JSON ({exc})") from None

    def _grpc_stub(self) -> Any:
        if self._stub is None:
            import grpc

            from servekit.protocols.generated import grpc_predict_v2_pb2_grpc as pb_grpc

            options = [("grpc.max_send_message_length", self.max_message_size),
                       ("grpc.max_receive_message_length", self.max_message_size)]
            if self.address.tls:
                root = open(self.verify, "rb").read() if isinstance(self.verify, str) else None  # noqa: SIM115
                channel = grpc.secure_channel(self.address.host_port, grpc.ssl_channel_credentials(root), options)
            else:
                channel = grpc.insecure_channel(self.address.host_port, options)
            try:
                grpc.channel_ready_future(channel).result(timeout=self.connect_timeout)
            except grpc.FutureTimeoutError:
                channel.close()
                raise ServerUnreachable(f"could not connect to {self.address.host_port} (gRPC) within "
                                        f"{self.connect_timeout:g} s") from None
            self._channel = channel
            self._stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        return self._stub

    def _rpc(self, method: str, request: Any, *, idempotent: bool = True,
             metadata: list[tuple[str, str]] | None = None) -> Any:
        import grpc

        extra = [(k.lower(), v) for k, v in self.headers.items()] + (metadata or [])
        attempt = 0
        while True:
            self.last_attempts = attempt + 1
            try:
                call = getattr(self._grpc_stub(), method)
                return call(request, timeout=self.timeout, metadata=extra or None)
            except grpc.RpcError as exc:
                error = _grpc_error(exc)
            except ServerUnreachable as exc:
                error = exc
            wait = self.should_retry(error, attempt, idempotent)
            if wait is None:
                raise error
            time.sleep(wait)
            attempt += 1

    # -- health and metadata -----------------------------------------------------------
    def live(self) -> bool:
        """Whether the server answers (``/v2/health/live``)."""
        if self.protocol == "grpc":
            return bool(self._rpc("ServerLive", _pb().ServerLiveRequest()).live)
        status, _, _ = self._request("GET", "/v2/health/live", accept=(503,))
        return status == 200

    def ready(self) -> bool:
        """Whether every model is ready (``/v2/health/ready``)."""
        if self.protocol == "grpc":
            return bool(self._rpc("ServerReady", _pb().ServerReadyRequest()).ready)
        status, _, _ = self._request("GET", "/v2/health/ready", accept=(503,))
        return status == 200

    def model_ready(self, model: str, version: str | None = None) -> bool:
        """Whether a model (version) is ready; False for one that does not exist."""
        if self.protocol == "grpc":
            try:
                return bool(self._rpc("ModelReady", _pb().ModelReadyRequest(name=model, version=version or "")).ready)
            except (ModelNotFound, ServiceUnavailable):
                return False
        status, _, _ = self._request("GET", model_path(model, version, "/ready"), accept=(404, 503))
        return status == 200

    def server_metadata(self) -> dict[str, Any]:
        if self.protocol == "grpc":
            answer = self._rpc("ServerMetadata", _pb().ServerMetadataRequest())
            return {"name": answer.name, "version": answer.version, "extensions": list(answer.extensions)}
        return dict(self._json("GET", "/v2"))

    def metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        """The model's metadata: name, versions, platform, inputs, outputs."""
        if self.protocol == "grpc":
            answer = self._rpc("ModelMetadata", _pb().ModelMetadataRequest(name=model, version=version or ""))
            document = codec.grpc_metadata(answer)
        else:
            document = dict(self._json("GET", model_path(model, version)))
        self.remember_inputs(model, version, document)
        return document

    def models(self, ready: bool = False) -> list[dict[str, Any]]:
        """The repository index: one entry (name, version, state, reason) per model version."""
        if self.protocol == "grpc":
            answer = self._rpc("RepositoryIndex", _pb().RepositoryIndexRequest(ready=ready))
            return [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}
                    for m in answer.models]
        return index_entries(self._json("POST", "/v2/repository/index", {"ready": ready} if ready else {}))

    def load(self, model: str) -> dict[str, Any]:
        """Load (or reload) a model from the repository; needs ``token`` when the server has one."""
        self.forget(model)
        if self.protocol == "grpc":
            self._rpc("RepositoryModelLoad", _pb().RepositoryModelLoadRequest(model_name=model),
                      idempotent=False, metadata=_grpc_auth(self.token))
            return {"name": model}
        return dict(self._json("POST", f"/v2/repository/models/{_quote(model)}/load",
                               headers=self.auth_headers(), idempotent=False))

    def unload(self, model: str) -> dict[str, Any]:
        """Unload a model; needs ``token`` when the server has one."""
        self.forget(model)
        if self.protocol == "grpc":
            self._rpc("RepositoryModelUnload", _pb().RepositoryModelUnloadRequest(model_name=model),
                      idempotent=False, metadata=_grpc_auth(self.token))
            return {"name": model}
        return dict(self._json("POST", f"/v2/repository/models/{_quote(model)}/unload",
                               headers=self.auth_headers(), idempotent=False))

    # -- inference ------------------------------------------------------------------------
    def infer(self, model: str, inputs: Any, *, model_version: str | None = None,
              outputs: list[str] | None = None, parameters: dict[str, Any] | None = None,
              request_id: str | None = None) -> dict[str, np.ndarray]:
        """The model's outputs by name, as numpy arrays. ``inputs``: a dict of
        arrays by input name, or one array for a model with one input."""
        return self.infer_result(model, inputs, model_version=model_version, outputs=outputs,
                                 parameters=parameters, request_id=request_id).outputs

    def infer_result(self, model: str, inputs: Any, *, model_version: str | None = None,
                     outputs: list[str] | None = None, parameters: dict[str, Any] | None = None,
                     request_id: str | None = None) -> InferResult:
        """As :meth:`infer`, with the rest of the answer (id, version, datatypes, parameters)."""
        declared = None
        if self.wants_metadata(inputs):
            declared = self.cached_inputs(model, model_version)
            if declared is None:
                declared = self.remember_inputs(model, model_version, self.metadata(model, model_version))
        arrays = self.prepare(inputs, declared)
        if self.protocol == "grpc":
            message = codec.grpc_request(model, model_version, arrays, outputs=outputs,
                                         parameters=parameters, request_id=request_id)
            return codec.grpc_response(self._rpc("ModelInfer", message, idempotent=False))
        body, headers = self.infer_rest_body(arrays, outputs, parameters, request_id)
        _, answer_headers, data = self._request("POST", model_path(model, model_version, "/infer"), body,
                                                headers=headers, idempotent=False)
        return codec.rest_response(data, answer_headers.get(codec.HEADER_LENGTH))

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
            self._pool = None
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _need(module: str) -> Any:
    """An optional dependency, or ImportError saying which extra brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"servekit's client over REST needs {module}: pip install 'servekit[client]'") from None


def _pb() -> Any:
    from servekit.protocols.generated import grpc_predict_v2_pb2

    return grpc_predict_v2_pb2


def _quote(model: str) -> str:
    from urllib.parse import quote

    return quote(model, safe="")


def _grpc_auth(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


def _grpc_error(exc: Any) -> ClientError:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    retry_after = None
    trailing: Callable[[], Any] | None = getattr(exc, "trailing_metadata", None)
    if callable(trailing):
        for key, value in trailing() or ():
            if key.lower() == "retry-after":
                retry_after = value if isinstance(value, str) else value.decode()
    return from_grpc(code.name if code is not None else "UNKNOWN", details or "", retry_after)


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)


__all__ = ["Client"]
