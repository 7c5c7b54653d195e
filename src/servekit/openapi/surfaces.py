"""What each route of each HTTP surface does, as OpenAPI operations.

Operations are looked up by the family of the route's handler (the module that
defines it: two surfaces may answer the same path, e.g. ``GET /v1/models/{model}``
is TF Serving's status on its port and KServe V1's on the main one), then by
method and path template. A route that none describes still appears in the
document (see :func:`servekit.openapi.document`), marked undescribed.
"""

from __future__ import annotations

from typing import Any

from servekit.openapi.schemas import ANY, BOOLEAN, INTEGER, STRING, Schema, array, ref

Operation = dict[str, Any]
Table = dict[tuple[str, str], Operation]

V2 = "V2 inference (Open Inference Protocol)"
V2_REPOSITORY = "V2 model repository extension"
V2_STATISTICS = "V2 statistics extension"
KSERVE_V1 = "KServe V1"
TFSERVING = "TF Serving REST"
TORCHSERVE = "TorchServe inference"
TORCHSERVE_MANAGEMENT = "TorchServe management"
SELDON = "Seldon microservice"
PREDICT = "/predict"
TYPED = "Typed models"
METRICS = "Metrics"
DOCUMENTS = "API documents"
DASHBOARD = "Dashboard"
MLFLOW = "MLflow scoring"

TAGS = {
    V2: "The Open Inference Protocol (V2) over REST: health, metadata and inference, as MLServer, KServe and "
    "Triton serve it. Bodies are JSON, or JSON followed by raw tensor bytes (Triton's binary tensor extension).",
    V2_REPOSITORY: "Triton's model repository extension: what the repository holds, load and unload "
    "(in every worker; with a management token, these need `Authorization: Bearer <token>`).",
    V2_STATISTICS: "Triton's statistics extension: counts and durations per model version.",
    KSERVE_V1: "KServe's V1 protocol (the row format of TF Serving) on the main port.",
    TFSERVING: "TensorFlow Serving's REST API (on `--rest_api_port`).",
    TORCHSERVE: "TorchServe's inference API.",
    TORCHSERVE_MANAGEMENT: "TorchServe's management API (its own port; `Authorization: Bearer <key>` "
    "when token authorization is on).",
    SELDON: "Seldon Core's microservice API for the default model.",
    PREDICT: "A plain `/predict`: rows of features in, a prediction out.",
    TYPED: "Typed library models: request and answer schemas come from the model's Python types.",
    METRICS: "Prometheus metrics.",
    DOCUMENTS: "This document and the page that shows it.",
    MLFLOW: "MLflow's scoring protocol, as `mlflow models serve` answers it, for the default model "
    "(`default_model`, or the only one served).",
    DASHBOARD: "The live dashboard of the served models (a page for browsers, and the state it polls).",
}

# what the path parameters of every surface mean
PATH_PARAMETERS = {
    "model": "The model's name.",
    "version": "A version of the model (its default version when left out).",
    "label": "A version label (TF Serving's `version_labels`, e.g. `stable`).",
    "name": "The model's name.",
    "asset": "A file of the docs page.",
}


def json_content(schema: Schema, examples: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if examples:
        content["examples"] = examples
    return {"application/json": content}


def answer(description: str, schema: Schema | None = None, *, content_type: str = "application/json",
           examples: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        entry: dict[str, Any] = {"schema": schema}
        if examples:
            entry["examples"] = examples
        out["content"] = {content_type: entry}
    return out


def op(summary: str, tag: str, ok: dict[str, Any], error: Schema, *, description: str = "",
       body: dict[str, Any] | None = None, query: list[dict[str, Any]] | None = None,
       more: dict[str, dict[str, Any]] | None = None, token: bool = False) -> Operation:
    """One operation: its 200 answer, other documented answers, and every
    other status in the surface's error format (``default``)."""
    out: Operation = {"summary": summary, "tags": [tag]}
    if description:
        out["description"] = description
    if query:
        out["parameters"] = query
    if body is not None:
        out["requestBody"] = body
    responses: dict[str, Any] = {"200": ok}
    responses.update(more or {})
    responses["default"] = answer("An error, in the surface's error format", error)
    out["responses"] = responses
    if token:
        out["security"] = [{}, {"bearer": []}]
    return out


def query_parameter(name: str, description: str, schema: Schema, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def json_body(schema: Schema, required: bool = True, description: str = "",
              examples: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"required": required, "content": json_content(schema, examples)}
    if description:
        out["description"] = description
    return out


# -- V2 -------------------------------------------------------------------------
def v2(metrics_path: str, examples: dict[str, dict[str, Any]]) -> Table:
    e = ref("Error")
    infer_body: dict[str, Any] = {
        "required": True,
        "content": {
            "application/json": {"schema": ref("V2InferenceRequest"), **_named(examples.get("infer"))},
            "application/octet-stream": {
                "schema": {
                    "type": "string", "contentMediaType": "application/octet-stream",
                    "description": "The JSON request (its length in `Inference-Header-Content-Length`) followed "
                    "by the inputs' raw bytes, each input naming its `binary_data_size`.",
                },
            },
        },
    }
    infer_ok = {
        "description": "The outputs; as JSON followed by raw bytes (`application/octet-stream`, "
        "`Inference-Header-Content-Length`) when binary outputs were asked for",
        "content": {
            "application/json": {"schema": ref("V2InferenceResponse"), **_named(examples.get("answer"))},
            "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}},
        },
    }
    header = {
        "name": "Inference-Header-Content-Length", "in": "header", "required": False,
        "description": "With a binary body: the length of its leading JSON part.",
        "schema": {"type": "integer", "minimum": 0},
    }
    infer_description = (
        "Runs the model on the inputs and answers the outputs asked for (all when none are named). "
        "`parameters.timeout` or the `X-Request-Timeout` header (seconds) bounds the wait."
    )
    if examples.get("models_text"):
        infer_description += "\n\n" + examples["models_text"]["value"]

    def infer(summary: str) -> Operation:
        return {**op(summary, V2, infer_ok, e, description=infer_description, body=infer_body),
                "parameters": [header]}

    metadata_ok = answer("The model's inputs, outputs and versions", ref("V2ModelMetadata"),
                         examples=examples.get("metadata"))
    ready_ok = answer("Ready (an unknown or not-ready model is 404 or 503)", ref("V2ModelReady"))
    stats_ok = answer("Statistics of the model versions", ref("V2Statistics"))
    index_body = json_body(ref("V2RepositoryIndexRequest"), required=False)
    change_ok = answer("Done in every worker", ref("V2RepositoryChange"))
    return {
        ("GET", "/v2/health/live"): op("Server live (V2)", V2, answer("Live", ref("V2ServerLive")), e),
        ("GET", "/v2/health/ready"): op(
            "Server ready (V2)", V2, answer("Every model is ready", ref("V2ServerReady")), e,
            more={"503": answer("A model is not ready, and why", ref("V2ServerReady"))}),
        ("GET", "/v2"): op("Server metadata (V2)", V2, answer("Name, version, extensions", ref("V2ServerMetadata")), e),
        ("GET", "/v2/"): op("Server metadata (V2, the spec's spelling)", V2,
                            answer("Name, version, extensions", ref("V2ServerMetadata")), e),
        ("GET", "/v2/models/{model}/ready"): op("Model ready (V2)", V2, ready_ok, e),
        ("GET", "/v2/models/{model}/versions/{version}/ready"): op("Model version ready (V2)", V2, ready_ok, e),
        ("GET", "/v2/models/{model}"): op("Model metadata (V2)", V2, metadata_ok, e),
        ("GET", "/v2/models/{model}/versions/{version}"): op("Model version metadata (V2)", V2, metadata_ok, e),
        ("POST", "/v2/models/{model}/infer"): infer("Infer with a model (V2)"),
        ("POST", "/v2/models/{model}/versions/{version}/infer"): infer("Infer with a model version (V2)"),
        ("GET", "/v2/models/stats"): op("Statistics of every model", V2_STATISTICS, stats_ok, e),
        ("GET", "/v2/models/{model}/stats"): op("Statistics of a model's versions", V2_STATISTICS, stats_ok, e),
        ("GET", "/v2/models/{model}/versions/{version}/stats"): op(
            "Statistics of a model version", V2_STATISTICS, stats_ok, e),
        ("POST", "/v2/repository/index"): op(
            "What the model repository holds", V2_REPOSITORY,
            answer("Every version: loaded, failed, or in the repository and not loaded",
                   ref("V2RepositoryIndex")), e, body=index_body),
        ("POST", "/v2/repository/models/{model}/load"): op(
            "Load (or reload) a model from the repository", V2_REPOSITORY, change_ok, e, token=True),
        ("POST", "/v2/repository/models/{model}/unload"): op(
            "Unload a model", V2_REPOSITORY, change_ok, e, token=True),
        ("GET", "/v2/repository/models/{model}/traffic"): op(
            "A model's traffic split and shadow, with the shadow's outcomes (servekit's)", V2_REPOSITORY,
            answer("The routing, the shadow's counts over every worker and its last differences", ref("V2Traffic")),
            e),
        ("PUT", "/v2/repository/models/{model}/traffic"): op(
            "Set a model's traffic split and shadow (servekit's)", V2_REPOSITORY,
            answer("Applied by every worker", ref("V2Traffic")), e, token=True,
            body=json_body(ref("V2TrafficRequest"), examples={"canary": {"value": {"traffic": {"2": 10}}},
                           "shadow": {"value": {"shadow": {"version": "3", "percent": 50}}}})),
        ("GET", metrics_path): metrics_operation(),
    }


def metrics_operation() -> Operation:
    return op("Prometheus metrics", METRICS,
              answer("Metrics in Prometheus' text format", {"type": "string"}, content_type="text/plain"),
              ref("Error"))


def _named(examples: dict[str, Any] | None) -> dict[str, Any]:
    return {"examples": examples} if examples else {}


# -- KServe V1 ------------------------------------------------------------------
def kserve_v1(examples: dict[str, dict[str, Any]]) -> Table:
    e = ref("Error")
    return {
        ("GET", "/"): op("Server alive (KServe V1)", KSERVE_V1, answer("Alive", ref("V1Alive")), e),
        ("GET", "/v1/models"): op("Model names (KServe V1)", KSERVE_V1, answer("Names", ref("V1Models")), e),
        ("GET", "/v1/models/{model}"): op(
            "Model ready (KServe V1)", KSERVE_V1, answer("Ready", ref("V1ModelStatus")), e,
            more={"503": answer("Not ready yet", ref("V1ModelStatus"))}),
        ("POST", "/v1/models/{model}:{method}"): {
            **op("Predict with a model (KServe V1)", KSERVE_V1,
                 answer("The predictions, one per instance", ref("TFPredictResponse")), e,
                 description="`:predict` takes `{\"instances\": [...]}` (or columnar `inputs`); `:explain` "
                 "answers 501 (servekit has no explainers).",
                 body=json_body(ref("TFPredictRequest"), examples=examples.get("rows")),
                 more={"501": answer(":explain: servekit has no explainers", ref("Error"))}),
            "x-servekit-enums": {"method": ["predict", "explain"]},
        },
    }


# -- MLflow scoring ---------------------------------------------------------------
MLFLOW_ERROR: Schema = {
    "type": "object", "required": ["error_code", "message"],
    "properties": {"error_code": {"type": "string", "examples": ["BAD_REQUEST"]}, "message": {"type": "string"}},
}


def mlflow() -> Table:
    e = MLFLOW_ERROR
    table_forms = {
        "type": "object",
        "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs; params optional.",
        "properties": {
            "dataframe_split": {"type": "object", "properties": {
                "columns": {"type": "array"}, "data": {"type": "array", "items": {"type": "array"}},
                "index": {"type": "array"}}},
            "dataframe_records": {"type": "array", "items": {"type": "object"}},
            "instances": {}, "inputs": {}, "params": {"type": "object"},
        },
    }
    body = {"required": True, "content": {
        "application/json": {"schema": table_forms,
                             "examples": {"split": {"value": {"dataframe_split": {"columns": ["a", "b"],
                                                                                   "data": [[1, 2]]}}}}},
        "text/csv": {"schema": {"type": "string"}},
    }}
    return {
        ("POST", "/invocations"): op(
            "Predict with the default model (MLflow)", MLFLOW,
            answer("The predictions", {"type": "object", "required": ["predictions"],
                                       "properties": {"predictions": {}}}), e,
            description="MLflow's input forms, or a CSV body with a header row.", body=body,
            more={"415": answer("An unsupported content type or charset", {"type": "string"},
                                content_type="text/plain")}),
        ("GET", "/health"): op("The default model is ready (MLflow)", MLFLOW, answer("Ready"), e,
                               more={"503": answer("Not ready")}),
        ("GET", "/version"): op("The installed MLflow's version (MLflow)", MLFLOW,
                                answer("The version", {"type": "string"}), e),
    }


# -- TF Serving REST --------------------------------------------------------------
def tfserving(monitoring_path: str | None, examples: dict[str, dict[str, Any]]) -> Table:
    e = ref("Error")
    out: Table = {}
    for prefix, which in (("/v1/models/{model}", ""), ("/v1/models/{model}/versions/{version}", " version"),
                          ("/v1/models/{model}/labels/{label}", " (by label)")):
        out[("GET", prefix)] = op(f"Model{which} status (TF Serving)", TFSERVING,
                                  answer("The versions' states", ref("TFModelStatus")), e)
        out[("GET", prefix + "/metadata")] = op(f"Model{which} signatures (TF Serving)", TFSERVING,
                                                answer("The signature_def map", ref("TFModelMetadata")), e)
        out[("POST", prefix + ":{method}")] = {
            **op(f"Predict, classify or regress with a model{which} (TF Serving)", TFSERVING,
                 answer("predictions/outputs (:predict) or results (:classify, :regress)",
                        {"anyOf": [ref("TFPredictResponse"), ref("TFClassifyResponse"), ref("TFRegressResponse")]}),
                 e,
                 description="`:predict` takes `instances` (rows) or `inputs` (columns); `:classify` and "
                 "`:regress` take `examples` (feature maps).",
                 body=json_body({"anyOf": [ref("TFPredictRequest"), ref("TFExamplesRequest")]},
                                examples=examples.get("rows"))),
            "x-servekit-enums": {"method": ["predict", "classify", "regress"]},
        }
    if monitoring_path:
        out[("GET", monitoring_path)] = metrics_operation()
    return out


# -- TorchServe -----------------------------------------------------------------
def torchserve() -> Table:
    e = ref("TSError")
    status = answer("Done", ref("TSStatus"))
    accepted = {"202": answer("Accepted: the workers are being updated", ref("TSStatus"))}
    prediction_body = {
        "required": False,
        "content": {
            "application/json": {"schema": ANY},
            "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}},
            "text/plain": {"schema": STRING},
            "multipart/form-data": {"schema": {"type": "object"}},
        },
        "description": "The payload for the model's handler (an image, text, JSON, form fields); a model without "
        "a handler takes a JSON list of numbers.",
    }
    predicted = {
        "200": {"description": "The handler's answer (its content type), or the outputs as JSON",
                "content": {"*/*": {"schema": ANY}}},
        "default": {"description": "An error as TorchServe's `{code, type, message}`, or the handler's own answer",
                    "content": {"*/*": {"schema": ANY}}},
    }

    def prediction(summary: str) -> Operation:
        return {"summary": summary, "tags": [TORCHSERVE], "requestBody": prediction_body, "responses": predicted}

    health = op("Health (TorchServe)", TORCHSERVE, answer("Healthy, Partial Healthy or Unhealthy", ref("TSHealth")), e)
    page = [query_parameter("limit", "Models per page (at most 100)", INTEGER),
            query_parameter("next_page_token", "Where the page starts", INTEGER)]
    register_query = [
        query_parameter("url", "The archive (.mar) in the model store, or a URL to fetch it from", STRING, True),
        query_parameter("model_name", "The name to serve it under", STRING),
        query_parameter("handler", "The handler (a built-in one or a file of the archive)", STRING),
        query_parameter("runtime", "python or python3", STRING),
        query_parameter("batch_size", "Largest batch", {"type": "integer", "minimum": 1}),
        query_parameter("max_batch_delay", "Longest wait for a batch (ms)", {"type": "integer", "minimum": 0}),
        query_parameter("initial_workers", "Workers to start (0: registered, not loaded)",
                        {"type": "integer", "minimum": 0}),
        query_parameter("synchronous", "Answer once loaded (default true)", BOOLEAN),
        query_parameter("startup_timeout", "Seconds the model may take to load", INTEGER),
    ]
    scale_query = [
        query_parameter("min_worker", "Workers wanted", {"type": "integer", "minimum": 0}),
        query_parameter("max_worker", "At most this many", {"type": "integer", "minimum": 0}),
        query_parameter("synchronous", "Answer once scaled (default false)", BOOLEAN),
    ]

    def management(summary: str, ok: dict[str, Any], **kw: Any) -> Operation:
        return op(summary, TORCHSERVE_MANAGEMENT, ok, e, token=True, **kw)

    describe = answer("Each version asked for", ref("TSModelDescription"))
    out: Table = {
        ("GET", "/ping"): health,
        ("POST", "/ping"): health,
        ("POST", "/predictions/{model}"): prediction("Predict with a model (TorchServe)"),
        ("PUT", "/predictions/{model}"): prediction("Predict with a model (TorchServe, PUT)"),
        ("POST", "/predictions/{model}/{version}"): prediction("Predict with a model version (TorchServe)"),
        ("PUT", "/predictions/{model}/{version}"): prediction("Predict with a model version (TorchServe, PUT)"),
        ("POST", "/wfpredict/{name}"): prediction("Run a workflow (TorchServe)"),
        ("PUT", "/wfpredict/{name}"): prediction("Run a workflow (TorchServe, PUT)"),
        ("POST", "/workflows"): management(
            "Register a workflow archive (.war) and its models (TorchServe)", status,
            query=[query_parameter("url", "The .war in the model store", STRING, True),
                   query_parameter("workflow_name", "The name to serve it under", STRING)]),
        ("GET", "/workflows"): management("List workflows (TorchServe)", answer("A page of workflows", ANY),
                                          query=page),
        ("GET", "/workflows/{name}"): management("Describe a workflow (TorchServe)", answer("The workflow", ANY)),
        ("DELETE", "/workflows/{name}"): management("Unregister a workflow and its models (TorchServe)", status),
        ("GET", "/token"): management(
            "Replace a key (TorchServe token authorization)", status,
            query=[query_parameter("type", "Which key", {"type": "string", "enum": ["management", "inference"]},
                                   True)],
            description="Needs the API key of key_file.json."),
    }
    for slash in ("", "/"):
        out.update({
            ("GET", f"/models{slash}"): management("List models (TorchServe)",
                                                   answer("A page of models", ref("TSModelList")), query=page),
            ("POST", f"/models{slash}"): management("Register a model archive (TorchServe)", status,
                                                    query=register_query, more=accepted),
            ("GET", f"/models/{{model}}{slash}"): management("Describe a model (TorchServe)", describe),
            ("GET", f"/models/{{model}}/{{version}}{slash}"): management(
                "Describe a model version, or `all` (TorchServe)", describe),
            ("PUT", f"/models/{{model}}{slash}"): management("Scale a model's workers (TorchServe)", status,
                                                             query=scale_query, more=accepted),
            ("PUT", f"/models/{{model}}/{{version}}{slash}"): management(
                "Scale a model version's workers (TorchServe)", status, query=scale_query, more=accepted),
            ("DELETE", f"/models/{{model}}{slash}"): management("Unregister a model's default version (TorchServe)",
                                                                status),
            ("DELETE", f"/models/{{model}}/{{version}}{slash}"): management(
                "Unregister a model version (TorchServe)", status),
        })
    out[("PUT", "/models/{model}/{version}/set-default")] = management(
        "Make a version the default (TorchServe)", status)
    return out


# -- Seldon -----------------------------------------------------------------------
def seldon(examples: dict[str, dict[str, Any]]) -> Table:
    e = ref("SeldonError")
    message_body = {
        "required": True,
        "content": {
            "application/json": {"schema": ref("SeldonMessage"), **_named(examples.get("seldon"))},
            "application/x-www-form-urlencoded": {"schema": ref("SeldonForm")},
        },
    }
    feedback_body = {
        "required": True,
        "content": {
            "application/json": {"schema": ref("SeldonFeedback")},
            "application/x-www-form-urlencoded": {"schema": ref("SeldonForm")},
        },
    }
    message = answer("The model's answer, in the request's form, with `meta`", ref("SeldonMessage"))
    json_query = [query_parameter("json", "The message, as JSON text", STRING)]

    def post(summary: str, body: dict[str, Any] = message_body) -> Operation:
        return op(summary, SELDON, message, e, body=body)

    def get(summary: str) -> Operation:
        return op(summary, SELDON, message, e, query=json_query)

    status = op("Health status (Seldon)", SELDON, answer("`health_status()` of the class", ref("SeldonMessage")), e)
    out: Table = {
        ("POST", "/api/v1.0/predictions"): post("Predict (Seldon)"),
        ("POST", "/api/v0.1/predictions"): post("Predict (Seldon, v0.1)"),
        ("POST", "/api/v1.0/feedback"): post("Send feedback (Seldon)", feedback_body),
        ("POST", "/api/v0.1/feedback"): post("Send feedback (Seldon, v0.1)", feedback_body),
        ("GET", "/health/ping"): op("Ping (Seldon)", SELDON, answer("pong", STRING, content_type="text/plain"), e),
        ("GET", "/health/status"): status,
        ("GET", "/api/v1.0/health/status"): status,
        ("GET", "/predict"): get("Predict with the message in the query (Seldon)"),
        ("POST", "/predict"): {
            **op("Predict with the default model (Seldon message, rows or a typed item)", PREDICT,
                 answer("A Seldon message for a Seldon body; `{\"prediction\": [...]}` for rows; a typed model's "
                        "output for its item",
                        {"anyOf": [ref("SeldonMessage"), ref("PredictAnswer"), ANY]}),
                 {"anyOf": [ref("Error"), ref("SeldonError")]},
                 body={"required": True, "content": {
                     "application/json": {"schema": {"anyOf": [ref("SeldonMessage"), ref("PredictRows"), ANY]},
                                          **_named(examples.get("flask"))},
                     "application/x-www-form-urlencoded": {"schema": ref("SeldonForm")}}}),
        },
        ("POST", "/send-feedback"): post("Send feedback (Seldon wrapper)", feedback_body),
        ("GET", "/send-feedback"): get("Send feedback, the message in the query (Seldon wrapper)"),
    }
    aggregate_body = {
        "required": True,
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["seldonMessages"],
                "properties": {"seldonMessages": {"type": "array", "items": ref("SeldonMessage")}}}},
            "application/x-www-form-urlencoded": {"schema": ref("SeldonForm")},
        },
    }
    for path, what, body in (("/transform-input", "Transform an input", message_body),
                             ("/transform-output", "Transform an output", message_body),
                             ("/route", "Route: the child a ROUTER picks", message_body),
                             ("/aggregate", "Aggregate: a COMBINER's answer to its children's", aggregate_body)):
        out[("POST", path)] = post(f"{what} (Seldon)", body)
        out[("GET", path)] = get(f"{what}, the message in the query (Seldon)")
    return out


# -- /predict ---------------------------------------------------------------------
def predict(examples: dict[str, dict[str, Any]]) -> Table:
    e = ref("Error")
    rows_or_item = {"anyOf": [ref("PredictRows"), ANY]}
    return {
        ("POST", "/predict"): op("Predict with the default model", PREDICT,
                                 answer("The prediction", {"anyOf": [ref("PredictAnswer"), ANY]}), e,
                                 body=json_body(rows_or_item, examples=examples.get("flask"))),
        ("POST", "/predict/{name}"): op(
            "Predict with a model (rows of features, or a typed model's item)", PREDICT,
            answer("`{\"prediction\": [...]}`, or a typed model's output", {"anyOf": [ref("PredictAnswer"), ANY]}),
            e, body=json_body(rows_or_item, examples=examples.get("flask")),
            description="Typed models also have an operation of their own below, with their schemas."),
        ("POST", "/predict/batch/{name}"): op(
            "Predict a list of items with a typed model", PREDICT, answer("One output per item", array(ANY)), e,
            body=json_body(array(ANY))),
    }


def dashboard() -> Table:
    e = ref("Error")

    def file(summary: str, content_type: str) -> Operation:
        return op(summary, DASHBOARD, answer("The file", STRING, content_type=content_type), e)

    alive_or_page = {
        "description": "The dashboard for a browser (`Accept: text/html`); KServe V1's liveness answer otherwise",
        "content": {"text/html": {"schema": STRING}, "application/json": {"schema": ref("V1Alive")}},
    }
    return {
        ("GET", "/"): op("The dashboard (browsers) or server alive (KServe V1)", DASHBOARD, alive_or_page, e),
        ("GET", "/ui"): file("The dashboard", "text/html"),
        ("GET", "/ui/"): file("The dashboard", "text/html"),
        ("GET", "/ui/app.js"): file("The dashboard's script", "text/javascript"),
        ("GET", "/ui/app.css"): file("The dashboard's style", "text/css"),
        ("GET", "/ui/favicon.svg"): file("The dashboard's icon", "image/svg+xml"),
        ("GET", "/ui/api/state"): op(
            "Models, versions, states and traffic, summed over every worker", DASHBOARD,
            answer("The state the page shows", {"type": "object"}), e),
        ("POST", "/ui/api/models/{model}/default"): op(
            "Make a version the default (dashboard; needs the management token)", DASHBOARD,
            answer("Done in every worker", {"type": "object"}), e, token=True,
            body=json_body({"type": "object", "properties": {"version": {"type": ["string", "null"]}},
                            "required": ["version"]})),
    }


def documents() -> Table:
    e = ref("Error")
    not_installed = {"501": answer("Swagger UI's files are not installed (the `docs` extra)", e)}
    return {
        ("GET", "/openapi.json"): op("This document (OpenAPI 3.1)", DOCUMENTS,
                                     answer("The API of this port", {"type": "object"}), e),
        ("GET", "/docs"): op("The API docs page (Swagger UI, served from the installed package)", DOCUMENTS,
                             answer("An HTML page", STRING, content_type="text/html"), e, more=not_installed),
        ("GET", "/docs/{asset}"): {
            **op("A file of the docs page", DOCUMENTS,
                 {"description": "The file", "content": {"*/*": {"schema": STRING}}}, e, more=not_installed),
            "x-servekit-enums": {"asset": []},  # filled with the files served
        },
    }


__all__ = ["PATH_PARAMETERS", "TAGS", "Operation", "Table", "dashboard", "documents", "kserve_v1", "predict", "seldon",
           "tfserving", "torchserve", "v2"]
