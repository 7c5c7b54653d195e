"""Canary and shadow releases (servekit.traffic), against a real 2-worker
server: a traffic split measured over many requests, pinned calls, live
changes through the V2 repository extension and through model-settings.json,
shadow answers recorded and never returned, a failing shadow that fails
nothing; the split and the routing rules in-process."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from servers import ServerProcess

from servekit.config import ModelParameters, ModelSettings, ServerSettings
from servekit.registry import Registry
from servekit.tensors import InferenceResponse, Tensor
from servekit.traffic.management import declared
from servekit.traffic.mirror import compare
from servekit.traffic.routing import Routing, Shadow

TOKEN = "traffic-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RUNTIME = '''
import os
import numpy as np
from servekit.runtimes.base import Runtime
from servekit.tensors import Tensor


class Scaled(Runtime):
    """x times the version's factor, and the pid of the worker that answered."""

    def predict(self, request):
        x = request.inputs[0].data
        factor = float(self.settings.parameters.extra.get("factor", 2))
        pid = np.array([os.getpid()], dtype=np.int64)
        return self.response(request, [Tensor("y", x * factor), Tensor("pid", pid)])


class Broken(Runtime):
    def predict(self, request):
        raise RuntimeError("the shadow version is broken")
'''
# version -> (implementation, factor): 5 is the default (the highest), 4 the canary
# (same answers), 3 a shadow that agrees, 2 one that does not, 1 one that raises
VERSIONS = {"1": ("scaled.Broken", 2), "2": ("scaled.Scaled", 3), "3": ("scaled.Scaled", 2),
            "4": ("scaled.Scaled", 2), "5": ("scaled.Scaled", 2)}
BODY = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}


def write_settings(repo: Path, version: str, **more: Any) -> None:
    implementation, factor = VERSIONS[version]
    settings = {"name": "m", "implementation": implementation,
                "parameters": {"version": version, "extra": {"factor": factor}}, **more}
    folder = repo / "m" / version
    folder.mkdir(parents=True, exist_ok=True)
    # written whole, then renamed: the poller never reads half a file
    (folder / "tmp.json").write_text(json.dumps(settings))
    (folder / "tmp.json").replace(folder / "model-settings.json")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    repo = tmp_path_factory.mktemp("traffic")
    (repo / "scaled.py").write_text(RUNTIME)
    for version in VERSIONS:
        write_settings(repo, version, **({"traffic": {"4": 10}} if version == "5" else {}))
    args = ["serve", str(repo), "--management-token", TOKEN, "--poll-wait-seconds", "0.3"]
    with ServerProcess(args, workers=2, cwd=repo) as process:
        yield process, repo


def infer(session: requests.Session, url: str, version: str | None = None) -> dict[str, Any]:
    path = f"/v2/models/m/versions/{version}/infer" if version else "/v2/models/m/infer"
    answer = session.post(url + path, json=BODY, timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def outputs(body: dict[str, Any]) -> dict[str, list[Any]]:
    return {o["name"]: o["data"] for o in body["outputs"]}


def put(url: str, document: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.put(url + "/v2/repository/models/m/traffic", json=document,
                        headers=AUTH if headers is None else headers, timeout=30)


def get(url: str) -> dict[str, Any]:
    answer = requests.get(url + "/v2/repository/models/m/traffic", timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_for(check: Any, what: str, seconds: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true (shadow calls run after
    the answer; the poller reads files on its own time); fail saying ``what``."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen; last seen: {last}")


def within_sigmas(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_a_ten_percent_canary_from_model_settings(server: tuple[ServerProcess, Path]) -> None:
    process, _ = server
    assert get(process.url)["traffic"] == {"4": 10.0}  # read from m/5/model-settings.json
    n = 2000
    with requests.Session() as session:
        seen = Counter(infer(session, process.url)["model_version"] for _ in range(n))
    assert set(seen) == {"4", "5"}, seen
    # binomial(2000, 0.1): 200 expected, 4 sigma = 54
    assert within_sigmas(seen["4"], n, 0.10), seen


def test_pinned_calls_always_get_their_version(server: tuple[ServerProcess, Path]) -> None:
    process, _ = server
    assert put(process.url, {"traffic": {"4": 50}}).status_code == 200
    with requests.Session() as session:
        for version in ("5", "4", "3"):
            seen = {infer(session, process.url, version)["model_version"] for _ in range(100)}
            assert seen == {version}
        unpinned = Counter(infer(session, process.url)["model_version"] for _ in range(200))
    assert set(unpinned) == {"4", "5"} and within_sigmas(unpinned["4"], 200, 0.5), unpinned


def test_a_live_change_is_applied_by_every_worker_when_the_call_returns(server: tuple[ServerProcess, Path]) -> None:
    process, _ = server
    for version in ("4", "5"):
        answer = put(process.url, {"traffic": {"4": 100 if version == "4" else 0}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["workers"] == 2
        # new connections land on either worker (SO_REUSEPORT): both answer by the new split at once
        pids: set[int] = set()
        for _ in range(60):
            with requests.Session() as session:
                body = infer(session, process.url)
            assert body["model_version"] == version
            pids.add(outputs(body)["pid"][0])
        assert len(pids) == 2, f"one worker only answered: {pids}"


def test_shadow_answers_are_recorded_and_never_returned(server: tuple[ServerProcess, Path]) -> None:
    process, _ = server
    answer = put(process.url, {"traffic": {}, "shadow": {"version": "2", "percent": 100}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["shadow"] == {"version": "2", "percent": 100.0}
    with requests.Session() as session:
        for _ in range(30):
            body = infer(session, process.url)
            # version 2 answers x * 3; the client only ever sees the default's x * 2
            assert body["model_version"] == "5" and outputs(body)["y"] == [2.0, 4.0]
        for _ in range(10):  # pinned calls are not mirrored
            infer(session, process.url, "5")
    state = wait_for(lambda: (s := get(process.url))["shadow_stats"]["different"] >= 30 and s, "30 differences")
    assert state["shadow_stats"] == {"mirrored": 30, "equal": 0, "different": 30, "failed": 0, "dropped": 0}
    difference = state["differences"][0]
    assert difference["kind"] == "different"
    assert (difference["served_version"], difference["shadow_version"]) == ("5", "2")
    assert difference["what"] == "output 'y': served [2.0, 4.0], shadow [3.0, 6.0]"
    assert len(state["differences"]) == 20  # the last 20 only
    # a shadow that agrees is counted equal
    assert put(process.url, {"shadow": {"version": "3", "percent": 100}}).status_code == 200
    with requests.Session() as session:
        for _ in range(20):
            assert outputs(infer(session, process.url))["y"] == [2.0, 4.0]
    state = wait_for(lambda: (s := get(process.url))["shadow_stats"]["equal"] >= 20 and s, "20 equal answers")
    assert state["shadow_stats"]["equal"] == 20 and state["shadow_stats"]["different"] == 0
    # Prometheus shows both sides: calls by the version that answered, the shadow's outcomes
    metrics = requests.get(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=30).text
    assert 'servekit_shadow_requests_total{model="m",outcome="equal",version="3"} 20.0' in metrics
    assert 'servekit_shadow_requests_total{model="m",outcome="different",version="2"} 30.0' in metrics
    assert 'servekit_model_requests_total{model="m",protocol="v2",version="4"}' in metrics


def test_a_failing_shadow_fails_nothing(server: tuple[ServerProcess, Path]) -> None:
    process, _ = server
    assert put(process.url, {"shadow": {"version": "1", "percent": 100}}).status_code == 200
    with requests.Session() as session:
        for _ in range(20):
            body = infer(session, process.url)
            assert body["model_version"] == "5" and outputs(body)["y"] == [2.0, 4.0]
    state = wait_for(lambda: (s := get(process.url))["shadow_stats"]["failed"] >= 20 and s, "20 failed shadow calls")
    assert state["shadow_stats"]["failed"] == 20
    failure = state["differences"][0]
    assert failure["kind"] == "failed" and failure["shadow_version"] == "1"
    assert "RuntimeError: the shadow version is broken" in failure["what"]


def test_half_the_calls_mirrored(server: tuple[ServerProcess, Path]) -> None:
    process, _ = server
    assert put(process.url, {"shadow": {"version": "3", "percent": 50}}).status_code == 200
    # the counts are the shadow version's since the server started: an earlier test mirrored to it too
    before = get(process.url)["shadow_stats"]["mirrored"]
    n = 400
    with requests.Session() as session:
        for _ in range(n):
            infer(session, process.url)
    state = wait_for(lambda: (s := get(process.url))["shadow_stats"]["mirrored"] == s["shadow_stats"]["equal"]
                     and s, "mirrored calls to end")
    assert within_sigmas(state["shadow_stats"]["mirrored"] - before, n, 0.5), (before, state["shadow_stats"])
    # the dashboard shows the same, summed over both workers
    board = requests.get(process.url + "/ui/api/state", timeout=30).json()["traffic"]["m"]
    assert board["shadow"] == {"version": "3", "percent": 50.0}
    assert board["shadow_stats"] == state["shadow_stats"]


def test_bad_traffic_is_refused_with_the_reason(server: tuple[ServerProcess, Path]) -> None:
    process, _ = server
    assert put(process.url, {"traffic": {"4": 10}}).status_code == 200
    cases = [
        ({"traffic": {"4": 60, "3": 50}}, 400, "add up to at most 100"),
        ({"traffic": {"4": 101}}, 400, "from 0 to 100"),
        ({"traffic": {"4": "ten"}}, 400, "must be a number"),
        ({"traffic": {"4": True}}, 400, "must be a number"),
        ({"traffic": [4]}, 400, "version -> percent"),
        ({"traffic": {"9": 10}}, 404, "has no version '9'"),
        ({"shadow": {"version": "9"}}, 404, "has no version '9'"),
        ({"shadow": {"version": "3", "percent": -1}}, 400, "from 0 to 100"),
        ({"shadow": "3"}, 400, "shadow must be an object"),
        ({"traffik": {"4": 10}}, 400, "'traffik': not a traffic setting"),
        ({"traffic": {str(v): 1 for v in range(17)}}, 400, "at most 16"),
    ]
    for document, status, words in cases:
        answer = put(process.url, document)
        assert answer.status_code == status, (document, answer.text)
        assert words in answer.json()["error"], (document, answer.text)
    answer = requests.put(process.url + "/v2/repository/models/m/traffic", data=b"{not json", headers=AUTH, timeout=30)
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]
    answer = put(process.url, {"traffic": {}}, headers={})
    assert answer.status_code == 401, answer.text
    answer = requests.get(process.url + "/v2/repository/models/nope/traffic", timeout=30)
    assert answer.status_code == 404 and "not found" in answer.json()["error"]
    assert get(process.url)["traffic"] == {"4": 10.0}  # nothing refused changed anything
    with requests.Session() as session:
        assert infer(session, process.url, "5")["model_version"] == "5"  # and the server serves on


def test_a_routing_set_through_the_api_outlasts_an_unrelated_sync(server: tuple[ServerProcess, Path]) -> None:
    process, repo = server
    assert put(process.url, {"traffic": {"3": 100}}).status_code == 200
    # another model appears: the poller's sync carries m's files again, which declare what they did
    (repo / "other").mkdir()
    implementation, _ = VERSIONS["5"]
    (repo / "other" / "model-settings.json").write_text(json.dumps({"name": "other", "implementation": implementation}))
    wait_for(lambda: requests.get(process.url + "/v2/models/other/ready", timeout=30).status_code == 200,
             "the new model to load")
    assert get(process.url)["traffic"] == {"3": 100.0}
    with requests.Session() as session:
        assert {infer(session, process.url)["model_version"] for _ in range(20)} == {"3"}


def test_model_settings_change_is_picked_up_live_without_a_reload(server: tuple[ServerProcess, Path]) -> None:
    process, repo = server
    loads_before = process.log().count("Loaded model 'm' version 5")
    write_settings(repo, "5", traffic={"4": 100}, shadow={"version": "2", "percent": 100})
    wait_for(lambda: get(process.url)["traffic"] == {"4": 100.0}, "the poller to apply the file's traffic")
    assert get(process.url)["shadow"] == {"version": "2", "percent": 100.0}
    pids: set[int] = set()
    for _ in range(40):
        with requests.Session() as session:
            body = infer(session, process.url)
        assert body["model_version"] == "4"
        pids.add(outputs(body)["pid"][0])
    assert len(pids) == 2
    assert process.log().count("Loaded model 'm' version 5") == loads_before  # traffic reloads no model


# -- in-process: the rules of the split -------------------------------------------------
def test_labels_and_versions_are_pinned_and_a_missing_canary_falls_back() -> None:
    asyncio.run(_pinning())


async def _pinning() -> None:
    registry = Registry(ServerSettings())
    here = str(Path(__file__).parent)
    for version in ("1", "2"):
        await registry.load(ModelSettings(name="d", implementation="plugin_runtimes.Doubler", source_dir=here,
                                          parameters=ModelParameters(version=version)))
    await registry.set_labels("d", {"stable": "1"})
    await registry.set_routing("d", Routing({"1": 100}))
    assert registry.resolve("d", routed=True).version == "1"
    assert registry.resolve("d").version == "2"  # metadata and readiness describe the default
    assert registry.resolve("d", "2", routed=True).version == "2"
    await registry.set_routing("d", Routing({"2": 100}))
    assert registry.resolve("d", label="stable", routed=True).version == "1"
    await registry.set_routing("d", Routing({"7": 100}))  # a version not served: the default answers
    assert registry.resolve("d", routed=True).version == "2"
    await registry.set_routing("d", Routing())
    assert registry.resolve("d", routed=True).version == "2" and not registry.shadows
    await registry.set_routing("d", Routing(shadow=Shadow("1", 100.0)))
    assert registry.shadows == {"d": Shadow("1", 100.0)}
    await registry.unload("d")
    assert not registry.shadows


def test_the_highest_version_declaring_traffic_wins() -> None:
    def settings(version: str, **more: Any) -> ModelSettings:
        return ModelSettings(name="d", parameters=ModelParameters(version=version), **more)

    found = declared([settings("10", traffic={"2": 5}), settings("9", traffic={"2": 50}), settings("11"),
                      ModelSettings(name="e")])
    assert found["d"] == Routing({"2": 5}) and found["e"] == Routing()


def test_compare_answers() -> None:
    import numpy as np

    def answer(**outputs: Any) -> InferenceResponse:
        return InferenceResponse("m", [Tensor(k, np.asarray(v)) for k, v in outputs.items()])

    assert compare(answer(y=[1.0, 2.0]), answer(y=[1.0, 2.0 + 1e-9])) is None
    assert compare(answer(y=[1, 2]), answer(y=[1, 3])) == "output 'y': served [1, 2], shadow [1, 3]"
    assert compare(answer(y=[1]), answer(z=[1])) == "outputs differ: served ['y'], shadow ['z']"
    assert compare(answer(y=[1, 2]), answer(y=[[1, 2]])) == "output 'y': served shape [2], shadow shape [1, 2]"
    assert compare(answer(y=np.array([b"a"], dtype=object)), answer(y=np.array([b"b"], dtype=object))) == (
        "output 'y': served ['a'], shadow ['b']"
    )
