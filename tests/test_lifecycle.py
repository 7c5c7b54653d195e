"""The worker's lifecycle without a server: typed changes, one function that
applies them, skins mounted on their listeners, and the router."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servekit.config import ModelParameters, ModelSettings, ServerSettings
from servekit.errors import ConfigError, InvalidInput, ServekitError
from servekit.registry import Registry
from servekit.repository.sources import ModelSources
from servekit.server.assembly import SKINS, build_app, build_context, listening_ports
from servekit.server.http import Response, Router, route
from servekit.server.lifecycle import MAIN, Change, Mount, ServerContext, Skin
from servekit.server.runner import Worker, change_handlers

HERE = str(Path(__file__).resolve().parent)


def test_a_change_is_one_line_whatever_its_names() -> None:
    change = Change("repository.load", {"name": "q\nunload echo"})
    line = change.encode()
    assert b"\n" not in line
    assert Change.decode(line) == change


@pytest.mark.parametrize("line", [b"not json", b"[]", b'{"kind": 1, "args": {}, "id": "x"}',
                                  b'{"kind": "k", "args": [], "id": "x"}'])
def test_a_malformed_change_is_refused(line: bytes) -> None:
    with pytest.raises(InvalidInput):
        Change.decode(line)


def test_two_skins_cannot_apply_the_same_kind() -> None:
    async def handler(ctx: ServerContext, change: Change) -> None:
        return None

    skins = [Skin("a", changes={"k": handler}), Skin("b", changes={"k": handler})]
    with pytest.raises(ConfigError, match="kind 'k'"):
        change_handlers(skins)


def make_worker(tmp_path: Path) -> Worker:
    settings = ServerSettings(parallel_workers=1)
    sources = ModelSources(settings)
    model = ModelSettings(name="double", implementation="plugin_runtimes.Doubler", source_dir=HERE,
                          parameters=ModelParameters(version="1"))
    sources.add(lambda: [model])
    return Worker(settings, sources, SKINS)


def test_one_worker_applies_changes_and_refuses_unknown_kinds(tmp_path: Path) -> None:
    worker = make_worker(tmp_path)

    async def scenario() -> None:
        worker.registry = Registry(worker.settings)
        await worker.registry.apply(worker.sources.wanted())
        ctx = worker.ctx = build_context(worker.settings, worker.registry, worker.sources)
        ctx.make_change = worker.make_change
        await ctx.change(Change("repository.unload", {"name": "double"}))
        assert not ctx.registry.has("double") and "double" in ctx.sources.unloaded
        await ctx.change(Change("repository.load", {"name": "double"}))
        assert ctx.registry.resolve("double").version == "1"
        with pytest.raises(ServekitError, match="unknown change kind 'nonsense'"):
            await ctx.change(Change("nonsense", {}))
        assert ctx.metrics.registry.get_sample_value(
            "servekit_change_failures_total", {"kind": "nonsense"}) == 1
        with pytest.raises(InvalidInput, match="needs a model name"):
            await ctx.change(Change("repository.load", {}))

    asyncio.run(scenario())


def test_skins_mount_on_their_listeners() -> None:
    async def scenario() -> None:
        settings = ServerSettings(http_port=9100, metrics_port=9102, rest_api_port=9100)
        registry = Registry(settings)
        ctx = build_context(settings, registry, ModelSources(settings))
        app, ports = build_app(ctx, SKINS)
        assert ports == [("127.0.0.1", 9100), ("127.0.0.1", 9102)]
        main = app.routers[9100]
        assert main.match("POST", "/v2/models/m/infer")[0] is not None
        assert main.match("POST", "/v1/models/m:predict")[0] is not None  # TF REST on the same port
        assert main.match("GET", "/metrics")[0] is not None
        metrics_only = app.routers[9102]
        assert metrics_only.match("GET", "/metrics")[0] is not None
        assert metrics_only.match("POST", "/v2/models/m/infer")[0] is None
        # TorchServe's management API exists only in TorchServe mode
        assert listening_ports(ServerSettings(http_port=9100, metrics_port=9102)) == [
            ("127.0.0.1", 9100), ("127.0.0.1", 9102)]

    asyncio.run(scenario())


def test_a_disabled_skin_mounts_nothing() -> None:
    async def handler(request: object) -> Response:
        return Response(b"x")

    skin = Skin("off", enabled=lambda settings: False,
                mounts=lambda ctx: [Mount(MAIN, [route("GET", "/off", handler)], lambda e: Response())])
    worker = Worker(ServerSettings(), ModelSources(ServerSettings()), [skin])
    assert worker.skins == []


def test_router_matches_method_and_path() -> None:
    async def handler(request: object) -> Response:
        return Response(b"x")

    router = Router([route("GET", "/models/{name}", handler), route("POST", "/files/{rest:path}", handler)])
    found, params, exists = router.match("GET", "/models/iris")
    assert found is not None and params == {"name": "iris"} and exists
    found, _, exists = router.match("DELETE", "/models/iris")
    assert found is None and exists  # 405, not 404
    found, params, _ = router.match("POST", "/files/a/b/c")
    assert found is not None and params == {"rest": "a/b/c"}
    assert router.match("HEAD", "/models/iris")[0] is not None
    assert router.match("GET", "/nothing") == (None, {}, False)


def test_kept_matches_stay_right_and_bounded() -> None:
    async def handler(request: object) -> Response:
        return Response(b"x")

    router = Router([route("GET", "/models/{name}", handler)])
    _, params, _ = router.match("GET", "/models/iris")
    params["name"] = "changed by the caller"
    assert router.match("GET", "/models/iris")[1] == {"name": "iris"}  # each caller gets its own dict
    assert router.match("GET", "/later") == (None, {}, False)
    later = route("GET", "/later", handler)
    router.add([later])  # a route added afterwards answers the path it used to miss
    assert router.match("GET", "/later")[0] is later
    for i in range(3 * Router.MATCHES_KEPT):  # paths a client makes up never pile up
        router.match("GET", f"/models/m{i}")
    assert len(router._matches) <= Router.MATCHES_KEPT
    assert router.match("GET", "/models/m7")[1] == {"name": "m7"}
    router.match("GET", "/" + "x" * 5000)  # nor does one long path stay
    assert ("GET", "/" + "x" * 5000) not in router._matches


_TEMPLATES = ["/v2", "/v2/", "/v2/models/stats", "/v2/models/{model}", "/v2/models/{model}/infer",
              "/v2/models/{model}/versions/{version}/infer", "/v1/models/{model}:predict",
              "/files/{rest:path}", "/{name}/x", "/{all:path}", "/", "/models/{m}/{v:path}"]


@given(
    st.lists(st.tuples(st.sampled_from(["GET", "POST"]), st.sampled_from(_TEMPLATES)), max_size=12),
    st.lists(st.sampled_from(["", "/", "v2", "models", "stats", "x", "files", "infer", "m:predict", "v1"]),
             max_size=8),
    st.sampled_from(["GET", "POST", "HEAD", "DELETE"]),
)
def test_the_router_index_answers_as_trying_every_route_in_order(
    table: list[tuple[str, str]], segments: list[str], method: str
) -> None:
    async def handler(request: object) -> Response:
        return Response()

    routes = [route(m, t, handler) for m, t in table]
    router = Router(routes[: len(routes) // 2])
    router.add(routes[len(routes) // 2 :])  # the index follows routes added later
    path = "/" + "/".join(segments)
    expected: tuple[object, dict[str, str], bool] = (None, {}, False)
    for candidate in routes:
        found = candidate.pattern.match(path)
        if found is None:
            continue
        if candidate.method != method and not (method == "HEAD" and candidate.method == "GET"):
            expected = (None, {}, True)
            continue
        expected = (candidate, found.groupdict(), True)
        break
    got = router.match(method, path)
    assert got[0] is expected[0] and got[1:] == expected[1:], (path, table)
