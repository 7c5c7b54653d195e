"""TensorFlow Serving's REST API (``--rest_api_port``, 8501 by default):

- ``GET  /v1/models/{name}[/versions/{v}|/labels/{l}]``  model status
- ``GET  /v1/models/{name}[…]/metadata``                 signature defs
- ``POST /v1/models/{name}[…]:predict|:classify|:regress``
- Prometheus metrics at the path of ``--monitoring_config_file``'s
  ``prometheus_config`` (``/monitoring/prometheus/metrics``)

Errors are ``{"error": "…"}`` with the HTTP status of the failure.
"""

from __future__ import annotations

from servekit.dataplane import Target, header_timeout
from servekit.errors import InvalidInput, ServekitError
from servekit.fronts.tfserving import codec, operations
from servekit.fronts.tfserving.flags import monitoring_path
from servekit.registry import ModelVersion, Registry
from servekit.server.http import Request, Response, Route, json_response, route
from servekit.server.lifecycle import TFSERVING_REST, Mount, ServerContext, Skin
from servekit.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from servekit.tensors import InferenceRequest

PROTOCOL = "tfserving"
METHODS = ("predict", "classify", "regress")


def error_response(exc: ServekitError) -> Response:
    return json_response({"error": exc.message}, exc.status)


def routes(ctx: ServerContext) -> list[Route]:
    registry = ctx.registry
    dataplane = ctx.dataplane

    def selected(p: dict[str, str]) -> tuple[str | None, str | None]:
        return p.get("version"), p.get("label")

    async def status(request: Request) -> Response:
        p = request.path_params
        version, label = selected(p)
        models = registry.select(p["model"], version, label)
        return json_response(
            {"model_version_status": [operations.version_status(m) for m in models]}
        )

    async def metadata(request: Request) -> Response:
        p = request.path_params
        version, label = selected(p)
        model, signatures = operations.model_signatures(registry, p["model"], version, label)
        return json_response(
            {
                "model_spec": {"name": model.name, "signature_name": "", "version": model.version},
                "metadata": {"signature_def": {"signature_def": signatures}},
            }
        )

    async def call(request: Request) -> Response:
        p = request.path_params
        method = p["method"]
        target = Target(p["model"], *selected(p))
        if method not in METHODS:
            raise InvalidInput(
                f"unknown method :{method} on {request.path}; use :predict, :classify or :regress"
            )
        version, label = selected(p)
        if not label:
            operations.check_servable(registry, p["model"], version)
        body = await request.body()
        timeout = header_timeout(request.headers)
        if timeout is None and ctx.settings.rest_api_timeout_in_ms:
            timeout = ctx.settings.rest_api_timeout_in_ms / 1000
        if method == "predict":
            rows: list[bool] = []

            def decode(model: ModelVersion) -> InferenceRequest:
                inference, count = codec.decode_predict(body)
                rows.append(count)
                return inference

            payload = await dataplane.serve(
                target, decode, lambda response: codec.encode_predict(response, rows[0]),
                protocol=PROTOCOL, timeout=timeout,
            )
            return Response(payload)
        examples, parameters = codec.decode_examples(body)
        encode = codec.encode_classify if method == "classify" else codec.encode_regress
        payload = await dataplane.serve(
            target,
            operations.examples_decoder(examples, parameters),
            lambda response: encode(response, len(examples)),
            protocol=PROTOCOL,
            timeout=timeout,
        )
        return Response(payload)

    e = error_response
    base = "/v1/models/{model}"
    out: list[Route] = []
    for prefix in (base, base + "/versions/{version}", base + "/labels/{label}"):
        out += [
            route("GET", prefix, status, e),
            route("GET", prefix + "/metadata", metadata, e),
            route("POST", prefix + ":{method}", call, e),
        ]
    return out




def model_gauge(registry: Registry) -> bytes:
    """Versions per model and state, from the registry: present from the
    start, before any request was counted (TF Serving's page always has some)."""
    lines = [
        "# HELP servekit_model_versions Model versions by state.",
        "# TYPE servekit_model_versions gauge",
    ]
    for name in registry.names():
        states: dict[str, int] = {}
        for model in registry.select(name):
            states[model.state.name] = states.get(model.state.name, 0) + 1
        lines += [f'servekit_model_versions{{model="{name}",state="{state}"}} {count}'
                  for state, count in sorted(states.items())]
    return ("\n".join(lines) + "\n").encode()


def mounts(ctx: ServerContext) -> list[Mount]:
    out = [Mount(TFSERVING_REST, routes(ctx), error_response)]
    where = monitoring_path(ctx.settings)
    if where:
        metrics, registry = ctx.metrics, ctx.registry

        async def prometheus(request: Request) -> Response:
            return Response(metrics.render() + model_gauge(registry), content_type=METRICS_CONTENT_TYPE)

        out.append(Mount(TFSERVING_REST, [route("GET", where, prometheus, error_response)], error_response))
    return out


SKIN = Skin(name="tfserving-rest", mounts=mounts)


__all__ = ["SKIN", "error_response", "routes"]
