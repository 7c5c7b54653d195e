"""The data plane: the one path from every protocol to a model.

Every skin (V2 REST and gRPC, TF Serving REST and gRPC, TorchServe inference,
Seldon, ``/predict``) decodes its wire format, calls :meth:`DataPlane.infer`
(or :meth:`DataPlane.serve`, which also times the encoding) and encodes the
answer. Everything that crosses protocols happens here, once::

    skin ── Target(name, version | label) + decode ──► DataPlane.serve
              resolve the version (registry, read-only)
              request id, one deadline (protocol timeout, gRPC deadline, header)
              prediction cache (models that opt in)
              registry.submit ──► batcher ──► invoker ──► runtime.predict
              metrics (same labels on success and failure), observers (spans, payloads)
              the shadow call offered (models with a shadow; never awaited)
    skin ◄── encoded answer

``decode`` may be the request itself or a function of the resolved version
(for skins that build the request from the model's metadata); an error raised
while decoding is counted like any other failure of the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, TypeVar

import numpy as np

from servekit.errors import ModelNotFound, ServekitError
from servekit.library.prediction_cache import LRUCache, PredictionCache, cache_key, make_cache
from servekit.library.runtime_cache import decode_response, encode_response, request_hash
from servekit.library.settings import LibrarySettings
from servekit.observability.request_id import bind as bind_request_id
from servekit.registry import ModelVersion, Registry
from servekit.tensors import InferenceRequest, InferenceResponse, Tensor
from servekit.traffic.mirror import Mirror

if TYPE_CHECKING:
    from servekit.batching import AdaptiveBatcher
    from servekit.residency import Residency
    from servekit.server.metrics import Metrics

log = logging.getLogger("servekit.dataplane")

T = TypeVar("T")
_NO_SPANS: dict[str, float] = {}  # shared, never written: spans are kept only when observed
Decode = InferenceRequest | Callable[[ModelVersion], InferenceRequest]

# a client's timeout is bounded before it is used
MAX_TIMEOUT_SECONDS = 3600.0
# the metrics label of calls to names nobody serves (keeps /metrics bounded)
UNKNOWN_MODEL = "(unknown)"


@dataclass(frozen=True, slots=True)
class Target:
    """What a call names: a model, and a version or a label (neither: the default)."""

    name: str
    version: str | None = None
    label: str | None = None


@dataclass(slots=True)
class InferenceCall:
    """One call through the data plane, as observers see it when it ends.
    ``spans`` holds seconds per step: ``decode``, ``infer`` (queue and
    predict, or the cache lookup) and ``encode``."""

    protocol: str
    target: Target
    model: ModelVersion | None = None
    request: InferenceRequest | None = None
    response: InferenceResponse | None = None
    error: ServekitError | None = None
    cached: bool = False
    spans: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


class InferenceObserver(Protocol):
    """Called once per call, after it ended (tracing, payload logging …)."""

    def __call__(self, call: InferenceCall) -> None: ...


class Tally(Protocol):
    """Counts every call at a fraction of an observer's cost (the dashboard's
    counters): a successful call is told by name, protocol and seconds, with
    no :class:`InferenceCall` made and no spans timed; a failed one as the
    :class:`InferenceCall` observers get."""

    def ok(self, name: str, protocol: str, seconds: float) -> None: ...

    def failed(self, call: InferenceCall) -> None: ...


class Plain(Generic[T]):
    """A protocol's plain lane (see :meth:`DataPlane.express`): ``decode``
    gives the commonest request's one input as (name, values, datatype, id),
    or None for any other body; ``encode`` answers (model name, model
    version, request id, the one output) as the protocol would answer the
    same call through ``predict``."""

    __slots__ = ("decode", "encode")

    def __init__(
        self,
        decode: Callable[[bytes], tuple[str, np.ndarray, str, str | None] | None],
        encode: Callable[[str, str | None, str, Tensor], T],
    ) -> None:
        self.decode = decode
        self.encode = encode


_NOT_PLAIN = object()  # the plain lane declined: express goes on as usual


def _identity(response: InferenceResponse) -> InferenceResponse:
    return response


class DataPlane:
    def __init__(
        self,
        registry: Registry,
        metrics: Metrics,
        *,
        observers: list[InferenceObserver] | None = None,
        cache_factory: Callable[[], PredictionCache] | None = None,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.observers: list[InferenceObserver] = list(observers or [])
        self.tally: Tally | None = None
        # lazy loading and the model budget (servekit.residency); None: every model is loaded
        self.residency: Residency | None = None
        # observers of some versions' calls only (payload logging): the calls of
        # other versions build no InferenceCall (one test of this dict)
        self.watchers: dict[ModelVersion, InferenceObserver] = {}
        self._cache_factory = cache_factory or (lambda: make_cache(LibrarySettings.from_env()))
        self._cache: PredictionCache | None = None
        # shadow calls (servekit.traffic): offered after the answer, for models with a shadow
        self.mirror = Mirror(registry, metrics)

    def resolve(self, target: Target) -> ModelVersion:
        """The ready version a target names (raises ModelNotFound / ModelNotReady)."""
        return self.registry.resolve(target.name, target.version, target.label, routed=True)

    async def infer(
        self, target: Target, decode: Decode, *, protocol: str, timeout: float | None = None
    ) -> InferenceResponse:
        """Run one request on the version ``target`` names; see :meth:`serve`."""
        return await self.serve(target, decode, _identity, protocol=protocol, timeout=timeout)

    async def serve(
        self,
        target: Target,
        decode: Decode,
        encode: Callable[[InferenceResponse], T],
        *,
        protocol: str,
        timeout: float | None = None,
    ) -> T:
        """Resolve, decode, run and encode one call, measured as one.

        ``timeout`` (seconds: a gRPC deadline, an HTTP header) and the request's
        own ``timeout`` parameter (microseconds, Triton's) give one deadline,
        the earlier of the two; a request still queued then is never run."""
        started = time.perf_counter()
        observed = bool(self.observers)
        model: ModelVersion | None = None
        request: InferenceRequest | None = None
        response: InferenceResponse | None = None
        cached = False
        spans: dict[str, float] = {} if observed else _NO_SPANS
        stage = "decode"  # where an unexpected error happened: decode, predict or encode
        try:
            residency = self.residency
            if residency is None:
                model = self.resolve(target)
            else:  # loaded on its first request, kept by how recently it was used
                model = residency.touch(target) or await residency.load(target)
            mark = time.perf_counter() if observed else 0.0
            request = decode(model) if callable(decode) else decode
            request.id = bind_request_id(request.id)  # and the id of the log lines and headers
            if timeout is not None or request.parameters:
                request.deadline = _deadline(request, timeout)
            if observed:
                now = time.perf_counter()
                spans["decode"] = now - mark
                mark = now
            stage = "predict"
            if model.settings.parameters.extra.get("cache_predictions"):
                response, cached = await self._cached(model, request)
            else:
                response = await self.registry.submit(model, request)
            if observed:
                now = time.perf_counter()
                spans["infer"] = now - mark
                mark = now
            stage = "encode"
            result = encode(response)
            if observed:
                spans["encode"] = time.perf_counter() - mark
        except Exception as exc:
            self._fail(exc, InferenceCall(protocol, target, model, request, response, None, cached, spans,
                                          time.perf_counter() - started), stage)
        self._answered(protocol, target, model, request, response, cached, spans, started)
        return result

    def express(
        self,
        target: Target,
        decode: Callable[[bytes], InferenceRequest],
        body: bytes,
        encode: Callable[[InferenceResponse, InferenceRequest], T],
        *,
        protocol: str,
        plain: Plain[T] | None = None,
    ) -> T | None:
        """:meth:`serve` in one synchronous step, for the plain call that is
        most of a server's traffic: no observer, no lazy loading, no cache, no
        deadline, and a model that is idle and runs inline (its batcher's
        ``run_now``). None, with nothing done or counted, when the call is not
        such a one (or does not decode): the caller then awaits :meth:`serve`,
        which also says what is wrong with a bad request.

        With ``plain``, the protocol's commonest request (one input, nothing
        else) goes to the runtime's ``plain_output`` when it offers one, with
        no request or response object made (see :class:`Plain`)."""
        if self.observers or self.residency is not None:
            return None
        started = time.perf_counter()
        try:
            model = self.resolve(target)
        except ServekitError:
            return None
        batcher = model.batcher
        if (
            batcher is None
            or not batcher.may_run_now()
            or (self.watchers and model in self.watchers)
            or model.settings.parameters.extra.get("cache_predictions")
        ):
            return None
        if plain is not None and not self.registry.shadows:
            answer = self._plain(protocol, target, model, batcher, body, plain, started)
            if answer is not _NOT_PLAIN:
                return answer  # type: ignore[return-value]  # (None: it would queue, as run_now would)
        try:
            request = decode(body)
        except Exception:
            return None
        if request.parameters and "timeout" in request.parameters:
            return None
        request.id = bind_request_id(request.id)
        response: InferenceResponse | None = None
        stage = "predict"
        try:
            response = batcher.run_now(request)
            if response is None:  # not idle, or not inline: queued and awaited by serve
                return None
            stage = "encode"
            result = encode(response, request)
        except Exception as exc:
            self._fail(exc, InferenceCall(protocol, target, model, request, response, None, False, _NO_SPANS,
                                          time.perf_counter() - started), stage)
        self._answered(protocol, target, model, request, response, False, _NO_SPANS, started)
        return result

    def _plain(
        self, protocol: str, target: Target, model: ModelVersion, batcher: AdaptiveBatcher, body: bytes,
        plain: Plain[T], started: float,
    ) -> T | object:
        """:meth:`express` through the runtime's ``plain_output``; _NOT_PLAIN,
        with nothing done or counted, when the body or the model is not for
        it; None when the call would not run at once and inline (too many
        rows), which ``run_now`` would refuse as well: the awaited path takes
        it without a second decode here."""
        found = plain.decode(body)
        runtime = model.runtime
        if found is None or runtime is None:
            return _NOT_PLAIN
        name, data, datatype, request_id = found
        features = runtime.plain_features(data)
        if features is None:
            return _NOT_PLAIN
        request_id = bind_request_id(request_id)
        stage = "predict"
        try:
            output = batcher.run_plain(runtime.plain_output, features)
            if output is None:
                return None
            stage = "encode"
            result = plain.encode(runtime.name, runtime.version, request_id, output)
        except Exception as exc:
            request = InferenceRequest([Tensor(name, data, datatype, {})], None, request_id, {})
            self._fail(exc, InferenceCall(protocol, target, model, request, None, None, False, _NO_SPANS,
                                          time.perf_counter() - started), stage)
        self._count(protocol, model, time.perf_counter() - started)
        return result

    def _fail(self, exc: Exception, call: InferenceCall, stage: str) -> NoReturn:
        """Count and tell a failed call; raise the error its caller answers with
        (``exc`` itself when it is a ServekitError, else a ModelFailed)."""
        error = exc if isinstance(exc, ServekitError) else _model_failed(
            exc, call.target, call.model, call.request, stage)
        call.error = error
        self.metrics.failure(*self._labels(call), call.protocol, error.status)
        if self.tally is not None:
            self.tally.failed(call)
        self._notify(call)
        if error is exc:
            raise exc
        raise error from exc

    def _answered(
        self, protocol: str, target: Target, model: ModelVersion, request: InferenceRequest,
        response: InferenceResponse, cached: bool, spans: dict[str, float], started: float,
    ) -> None:
        """Count and tell a call that was answered; offer it to the model's shadow."""
        seconds = time.perf_counter() - started
        self._count(protocol, model, seconds)
        if spans is not _NO_SPANS or (self.watchers and model in self.watchers):
            self._notify(InferenceCall(protocol, target, model, request, response, None, cached, spans,
                                       seconds))
        if self.registry.shadows and not target.version and target.label is None:
            self.mirror.offer(model, request, response)

    def _count(self, protocol: str, model: ModelVersion, seconds: float) -> None:
        self.metrics.observe(model.name, model.version, protocol, seconds)
        if self.tally is not None:
            self.tally.ok(model.name, protocol, seconds)

    async def _cached(
        self, model: ModelVersion, request: InferenceRequest
    ) -> tuple[InferenceResponse, bool]:
        """(answer, whether the cache gave it): from the prediction cache, or run
        the request and keep its answer."""
        cache = self.cache()
        key = cache_key(model.name, model.version, request_hash(request))
        hit = (await self._cache_call(cache, cache.get_many, [key]))[0]
        if hit is not None:
            return decode_response(hit, model.name, model.version, request), True
        response = await self.registry.submit(model, request)
        await self._cache_call(cache, cache.set_many, {key: encode_response(response)})
        return response, False

    def cache(self) -> PredictionCache:
        """The prediction cache, made on first use (from ``SERVEKIT_CACHE_*``)."""
        if self._cache is None:
            self._cache = self._cache_factory()
        return self._cache

    @staticmethod
    async def _cache_call(cache: PredictionCache, method: Callable[[Any], T], argument: Any) -> T:
        # an in-process LRU answers in microseconds; a remote cache is a network
        # round trip, which must not hold the event loop
        if isinstance(cache, LRUCache):
            return method(argument)
        return await asyncio.to_thread(method, argument)

    def _labels(self, call: InferenceCall) -> tuple[str, str]:
        """(model, version) labels of a failed call: the resolved version when
        there is one; a name nobody serves is counted under one label."""
        if call.model is not None:
            return call.model.name, call.model.version
        target = call.target
        if isinstance(call.error, ModelNotFound) and not self.registry.has(target.name):
            return UNKNOWN_MODEL, ""
        return target.name, target.version or ""

    def _notify(self, call: InferenceCall) -> None:
        for observer in self.observers:
            observer(call)
        if self.watchers and call.model in self.watchers:
            self.watchers[call.model](call)


class ModelFailed(ServekitError):
    """The model (or the code around it) raised: its type and message, with
    the request id that finds the traceback in the log (500 in every protocol)."""

    status = 500


def _model_failed(
    exc: Exception, target: Target, model: ModelVersion | None, request: InferenceRequest | None,
    stage: str,
) -> ModelFailed:
    request_id = bounded(request.id, 128) if request is not None and request.id else "-"
    name = model.name if model is not None else target.name
    version = model.version if model is not None else target.version or ""
    what = {"decode": "decoding the request for", "encode": "encoding the answer of"}.get(stage)
    log.error(
        "%s %r%s failed on request %s", what or "Model", name, f" version {version}" if version else "",
        request_id, exc_info=exc,
    )
    detail = bounded(str(exc), MAX_DETAIL)
    cause = f"{type(exc).__name__}" + (f": {detail}" if detail else "")
    where = f"{what} model {name!r} failed with {cause}" if what else f"model {name!r} raised {cause}"
    return ModelFailed(f"{where} (request id {request_id}; the traceback is in the server log)")


MAX_DETAIL = 500  # characters of an exception's message a client sees


def bounded(text: str, limit: int) -> str:
    """``text`` on one line, control characters escaped (``\\x1b``), at most
    ``limit`` characters (then ending in ``…``): safe in a JSON body, a gRPC
    status message or a log line."""
    flat = " ".join(text.split())
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat[: limit + 1])
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


def _deadline(request: InferenceRequest, timeout: float | None) -> float | None:
    seconds = timeout
    value = request.parameters.get("timeout") if request.parameters else None
    if value is not None and not isinstance(value, bool):
        try:
            micros = float(value)
        except (TypeError, ValueError):
            micros = 0.0
        if micros > 0 and (seconds is None or micros / 1e6 < seconds):
            seconds = micros / 1e6
    if seconds is None or seconds != seconds:  # None or NaN
        return None
    return time.monotonic() + min(max(seconds, 0.0), MAX_TIMEOUT_SECONDS)


def header_timeout(headers: dict[str, str]) -> float | None:
    """A deadline sent as an HTTP header: ``X-Request-Timeout`` in seconds, or
    gRPC-web/Envoy style ``grpc-timeout`` (``100m``, ``5S`` …); None if absent
    or unreadable."""
    raw = headers.get("x-request-timeout")
    if raw:
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if value > 0 else None
    raw = headers.get("grpc-timeout")
    if raw and len(raw) <= 9 and raw[:-1].isdigit():
        unit = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}.get(raw[-1])
        return int(raw[:-1]) * unit if unit else None
    return None


__all__ = [
    "DataPlane",
    "Decode",
    "InferenceCall",
    "InferenceObserver",
    "ModelFailed",
    "Tally",
    "Target",
    "header_timeout",
]
