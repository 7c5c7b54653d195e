"""The OpenAPI 3.1 documents of every HTTP port, and the ``/docs`` page.

- Each port's document lists exactly the routes its router answers (methods
  and path templates), in every arrangement of listeners (TF Serving's REST
  API on a port of its own or on the main one, TorchServe mode with its
  management port), and validates as OpenAPI 3.1 (openapi-spec-validator).
- A route added later appears without anyone describing it.
- A real server's documents: the served models' metadata are the examples, and
  those examples are answered by the server as the document says; typed models
  have operations whose schemas are their types.
- ``/docs`` renders in Chromium (Playwright) with every request outside
  127.0.0.1 refused, and shows the operations.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import jsonschema
import pytest
import requests
from openapi_spec_validator import validate
from servers import ServerProcess, free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit import openapi
from servekit.config import ServerSettings
from servekit.openapi import docs
from servekit.registry import Registry
from servekit.repository.sources import ModelSources
from servekit.server.assembly import SKINS, build_app, build_context
from servekit.server.http import Response, Router, route
from servekit.server.lifecycle import MAIN, Mount, Skin

CHROMIUM = "/usr/bin/chromium"
# the skins of the surfaces issue 14 asks to describe (every route of theirs has an operation)
DESCRIBED_SKINS = {"v2-rest", "seldon", "predict", "tfserving-rest", "kserve-v1", "torchserve", "openapi",
                   "dashboard", "mlflow"}


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, route template) of every operation; a model's own operation
    (``x-servekit-route``) counts as the route that answers it."""
    out = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            out.add((method.upper(), operation.get("x-servekit-route", path)))
    return out


def routes_of(router: Router) -> set[tuple[str, str]]:
    return {(r.method, openapi.openapi_path(openapi.template(r))) for r in router.routes}


def arrangements(tmp: Path) -> dict[str, ServerSettings]:
    main, metrics, tf, management = free_port(), free_port(), free_port(), free_port()
    return {
        "tf-serving on its own port": ServerSettings(http_port=main, metrics_port=metrics, rest_api_port=tf),
        "tf-serving on the main port": ServerSettings(http_port=main, metrics_port=metrics, rest_api_port=main),
        "metrics on the main port only": ServerSettings(http_port=main, metrics_port=main),
        "torchserve mode": ServerSettings(http_port=main, metrics_port=metrics, management_port=management,
                                          model_store=str(tmp)),
    }


def built(settings: ServerSettings, skins: list[Skin]) -> tuple[Any, dict[int, Router]]:
    async def build() -> tuple[Any, dict[int, Router]]:
        ctx = build_context(settings, Registry(settings), ModelSources(settings))
        app, _ = build_app(ctx, skins)
        return ctx, app.routers

    return asyncio.run(build())


@pytest.mark.parametrize("arrangement", ["tf-serving on its own port", "tf-serving on the main port",
                                         "metrics on the main port only", "torchserve mode"])
def test_each_ports_document_lists_exactly_the_routes_it_answers(arrangement: str, tmp_path: Path) -> None:
    ctx, routers = built(arrangements(tmp_path)[arrangement], SKINS)
    assert len(routers) >= 1
    for port, router in routers.items():
        document = openapi.document(ctx, router, port)
        validate(document)  # OpenAPI 3.1
        assert document["openapi"] == "3.1.0"
        assert operations(document) == routes_of(router), port
        assert ("GET", "/openapi.json") in operations(document) and ("GET", "/docs") in operations(document)


def test_the_surfaces_describe_every_route_they_mount(tmp_path: Path) -> None:
    """No route of the protocols' skins falls back to the generic operation."""
    for settings in arrangements(tmp_path).values():
        skins = [skin for skin in SKINS if skin.name in DESCRIBED_SKINS]
        ctx, routers = built(settings, skins)
        for port, router in routers.items():
            document = openapi.document(ctx, router, port)
            undescribed = [(m, p) for p, item in document["paths"].items() for m, o in item.items()
                           if o.get("x-servekit-undescribed")]
            assert undescribed == [], port
            for item in document["paths"].values():
                for operation in item.values():
                    assert operation["summary"] and operation["tags"] and "200" in operation["responses"]


def test_a_route_added_later_is_in_the_document_undescribed() -> None:
    async def handler(request: object) -> Response:
        return Response(b"{}")

    later = Skin("later", mounts=lambda ctx: [
        Mount(MAIN, [route("PATCH", "/later/{thing}/{rest:path}", handler)], lambda e: Response())])
    settings = ServerSettings(http_port=free_port(), metrics_port=free_port())
    ctx, routers = built(settings, [*SKINS, later])
    router = routers[settings.http_port]
    document = openapi.document(ctx, router, settings.http_port)
    validate(document)
    operation = document["paths"]["/later/{thing}/{rest}"]["patch"]
    assert operation["x-servekit-undescribed"] is True and operation["summary"] == "PATCH /later/{thing}/{rest}"
    assert [p["name"] for p in operation["parameters"]] == ["thing", "rest"]
    assert operations(document) == routes_of(router)


def test_a_route_made_without_its_template_is_read_back_from_its_pattern() -> None:
    async def handler(request: object) -> Response:
        return Response()

    made = route("POST", "/v1/models/{model}/versions/{version}:{method}", handler)
    bare = type(made)(made.method, made.pattern, made.handler, made.on_error)  # as a wrapper might copy it
    assert openapi.template(bare) == made.path == "/v1/models/{model}/versions/{version}:{method}"


# -- a real server ------------------------------------------------------------------------
TYPED_MODEL = '''
from pydantic import BaseModel

from servekit import Model


class Flower(BaseModel):
    petal_length: float
    petal_width: float


class Score(BaseModel):
    label: str
    score: float


class Species(BaseModel):
    best: str
    scores: list[Score]


class Guess(Model[Flower, Species]):
    CONFIGURATIONS = {"guess": {}}

    def _predict(self, item):
        best = "virginica" if item.petal_length > 4.8 else "setosa"
        return Species(best=best, scores=[Score(label=best, score=1.0)])
'''


def make_repository(root: Path) -> Path:
    X, y = load_iris(return_X_y=True)
    (root / "iris").mkdir(parents=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), root / "iris" / "model.joblib")
    (root / "iris" / "model-settings.json").write_text(json.dumps(
        {"name": "iris", "implementation": "sklearn", "parameters": {"uri": "model.joblib", "version": "1"}}))
    (root / "guess").mkdir()
    (root / "guess" / "guess_model.py").write_text(TYPED_MODEL)
    (root / "guess" / "model-settings.json").write_text(json.dumps(
        {"name": "guess", "implementation": "guess_model.Guess"}))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = make_repository(tmp_path_factory.mktemp("repo"))
    tf_port = free_port()
    with ServerProcess(["serve", str(root), "--no-enable-grpc", "--rest_api_port", str(tf_port)],
                       extra_ports={"tf": tf_port}) as process:
        yield process
        assert "Traceback" not in process.log(), process.log()


def parameter(operation: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in operation["parameters"] if p["name"] == name)


def fetch(port: int, path: str = "/openapi.json") -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=30)


def test_every_port_serves_a_valid_document_of_its_own(server: ServerProcess) -> None:
    main = fetch(server.http_port).json()
    tf = fetch(server.ports["tf"]).json()
    metrics = fetch(server.metrics_port).json()
    for document in (main, tf, metrics):
        validate(document)
    assert "main HTTP port" in main["info"]["title"] and "TF Serving REST port" in tf["info"]["title"]
    assert set(metrics["paths"]) == {"/metrics", "/openapi.json", "/docs", "/docs/{asset}"}
    assert not any(path.startswith("/v2") for path in tf["paths"])
    assert "/v1/models/{model}/labels/{label}:{method}" in tf["paths"]
    tf_verbs = parameter(tf["paths"]["/v1/models/{model}:{method}"]["post"], "method")["schema"]["enum"]
    assert tf_verbs == ["predict", "classify", "regress"]
    # KServe V1 on the main port, with its own verbs
    kserve = main["paths"]["/v1/models/{model}:{method}"]["post"]
    assert kserve["tags"] == ["KServe V1"] and parameter(kserve, "method")["schema"]["enum"] == ["predict", "explain"]
    tags = {tag["name"] for tag in main["tags"]}
    assert {"V2 inference (Open Inference Protocol)", "V2 model repository extension", "V2 statistics extension",
            "KServe V1", "Seldon microservice", "/predict", "Typed models", "Metrics"} <= tags
    # each document points at the others
    assert f"port {server.ports['tf']}" in main["info"]["description"]


def test_the_v2_examples_are_the_served_models_and_the_server_answers_them(server: ServerProcess) -> None:
    document = fetch(server.http_port).json()
    infer = document["paths"]["/v2/models/{model}/infer"]["post"]
    assert infer["summary"] == "Infer with a model (V2)"
    model_parameter = parameter(infer, "model")
    assert set(model_parameter["schema"]["examples"]) == {"guess", "iris"}
    assert "| `iris` | 1 | sklearn |" in infer["description"]
    example = infer["requestBody"]["content"]["application/json"]["examples"]["iris"]["value"]
    assert example == {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [0, 0, 0, 0]}]}
    answer = requests.post(f"{server.url}/v2/models/iris/infer", json=example, timeout=30)
    assert answer.status_code == 200
    schemas = {"components": document["components"]}
    response_schema = {**infer["responses"]["200"]["content"]["application/json"]["schema"], **schemas}
    jsonschema.validate(answer.json(), response_schema)
    metadata = document["paths"]["/v2/models/{model}"]["get"]["responses"]["200"]["content"]["application/json"]
    served = requests.get(f"{server.url}/v2/models/iris", timeout=30).json()
    assert metadata["examples"]["iris"]["value"] == served
    jsonschema.validate(served, {**metadata["schema"], **schemas})


def test_a_typed_model_has_operations_with_its_types(server: ServerProcess) -> None:
    document = fetch(server.http_port).json()
    operation = document["paths"]["/predict/guess"]["post"]
    assert operation["x-servekit-route"] == "/predict/{name}" and operation["tags"] == ["Typed models"]
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["required"] == ["petal_length", "petal_width"]
    response_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert response_schema["properties"]["scores"]["items"] == {"$ref": "#/components/schemas/Score"}
    assert document["components"]["schemas"]["Score"]["required"] == ["label", "score"]
    answer = requests.post(f"{server.url}/predict/guess", json={"petal_length": 5.5, "petal_width": 2.0},
                           timeout=30).json()
    assert answer == {"best": "virginica", "scores": [{"label": "virginica", "score": 1.0}]}
    jsonschema.validate(answer, {**response_schema, "components": document["components"]})
    batch = document["paths"]["/predict/batch/guess"]["post"]
    assert batch["x-servekit-route"] == "/predict/batch/{name}"
    # the untyped model is served by the template route, not an operation of its own
    assert "/predict/iris" not in document["paths"] and "/predict/{name}" in document["paths"]


def test_the_docs_page_and_its_files_come_from_the_installed_package(server: ServerProcess) -> None:
    page = fetch(server.http_port, "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(not s.startswith(("http:", "https:", "//")) for s in sources), sources
    assert "validatorUrl: null" in page.text
    folder = docs.asset_folder()
    assert folder is not None
    bundle = fetch(server.http_port, "/docs/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("application/javascript")
    assert bundle.content == (folder / "swagger-ui-bundle.js").read_bytes()
    unknown = fetch(server.http_port, "/docs/../../etc/passwd")
    assert unknown.status_code == 404
    missing = fetch(server.http_port, "/docs/swagger-editor.js")
    assert missing.status_code == 404 and "swagger-ui-bundle.js" in missing.json()["error"]
    # every port has the page, showing its own document
    assert fetch(server.ports["tf"], "/docs").status_code == 200


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_the_docs_page_renders_offline_in_chromium(server: ServerProcess, tmp_path: Path) -> None:
    from playwright.sync_api import Route as Intercepted
    from playwright.sync_api import sync_playwright

    refused: list[str] = []

    def only_this_machine(intercepted: Intercepted) -> None:
        url = intercepted.request.url
        if url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            intercepted.continue_()
        else:
            refused.append(url)
            intercepted.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update"])
        try:
            page = browser.new_page()
            page.route("**/*", only_this_machine)
            page.goto(f"{server.url}/docs")
            page.get_by_text("Infer with a model (V2)", exact=True).wait_for(timeout=30_000)
            assert page.get_by_text("Predict with a model (KServe V1)", exact=True).count() == 1
            assert page.get_by_text("Register a model archive (TorchServe)").count() == 0  # not on this port
            assert page.locator(".opblock-tag-section").count() >= 8
            assert "servekit — main HTTP port" in page.content()
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
            # the TF Serving port's page shows its own operations
            page.goto(f"http://127.0.0.1:{server.ports['tf']}/docs")
            page.get_by_text("Predict, classify or regress with a model (TF Serving)", exact=True).wait_for(
                timeout=30_000)
            assert page.get_by_text("Infer with a model (V2)", exact=True).count() == 0
        finally:
            browser.close()
    assert refused == []
