"""servekit on Ray Serve (``servekit serve --engine ray``, ``servekit.ray.deploy``):
a local Ray cluster on 127.0.0.1 (``ray start --head`` with 2 CPUs, every port
its own), a repository of a scikit-learn and an XGBoost model trained here, V2
requests with requests and tritonclient whose answers equal the models' own
predictions in this process, V2 errors from the ingress and from the replicas,
and replica counts following the model settings through ``serve.status()``.

The cluster is stopped by signalling the process group of the ``ray start
--block`` this module started (never ``ray stop``, which stops every Ray
cluster of the machine, other people's too).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from servers import SERVEKIT, free_port
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression

from servekit.config import ModelSettings
from servekit.errors import ConfigError
from servekit.ray import options as ray_options

xgb = pytest.importorskip("xgboost")
# Ray itself is imported by the cluster fixture, once its environment is set (Ray reads it at import)
if importlib.util.find_spec("ray") is None:
    pytest.skip("the ray extra (pip install 'servekit[ray]')", allow_module_level=True)

IRIS = load_iris()
DIGITS = load_digits()
CPUS = 0.2  # per replica: the cluster has 2 CPUs and shares the machine


# -- options from settings (no cluster) ------------------------------------------------------
def settings(**fields: Any) -> ModelSettings:
    return ModelSettings(name="m", **fields)


def test_replicas_follow_parallel_workers() -> None:
    assert ray_options.replica_options(settings()) == {"num_replicas": 1}
    assert ray_options.replica_options(settings(parallel_workers=0)) == {"num_replicas": 1}
    assert ray_options.replica_options(settings(parallel_workers=3)) == {"num_replicas": 3}


def test_autoscaling_from_min_max_and_target() -> None:
    assert ray_options.replica_options(settings(min_replicas=1, max_replicas=4, target_ongoing_requests=8)) == {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8.0}}
    # parallel_workers is where autoscaling starts; a lone max starts from one
    assert ray_options.replica_options(settings(parallel_workers=2, max_replicas=5)) == {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 5, "initial_replicas": 2}}
    assert ray_options.replica_options(settings(min_replicas=0, target_ongoing_requests=1)) == {
        "autoscaling_config": {"min_replicas": 0, "max_replicas": 1, "target_ongoing_requests": 1.0}}


def test_contradicting_replica_settings_name_the_model() -> None:
    with pytest.raises(ConfigError, match="model 'm': min_replicas 3 is more than max_replicas 2"):
        ray_options.replica_options(settings(min_replicas=3, max_replicas=2))
    with pytest.raises(ConfigError, match=r"parallel_workers 5 .* outside min_replicas 1 \.\. max_replicas 2"):
        ray_options.replica_options(settings(parallel_workers=5, max_replicas=2))


def test_replica_settings_are_validated_in_the_settings_file(tmp_path: Path) -> None:
    from servekit.config import load_model_settings

    path = tmp_path / "m" / "model-settings.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"name": "m", "max_replicas": 0}))
    with pytest.raises(ConfigError, match="max_replicas: Input should be greater than or equal to 1"):
        load_model_settings(path)


# -- one model's replica, in this process (no cluster) ---------------------------------------------
def replica_of(folder: Path) -> Any:
    import asyncio

    from servekit.config import ServerSettings, load_model_settings
    from servekit.ray.replica import ModelReplica

    settings = load_model_settings(folder / "model-settings.json")
    replica = ModelReplica(settings.name, [settings], ServerSettings())
    asyncio.run(replica.load())
    return replica


def call(replica: Any, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    import asyncio

    headers = [(b"content-type", b"application/json")]
    status, _, answer = asyncio.run(replica.call(method, path, b"", headers, json.dumps(body or {}).encode()))
    return status, json.loads(answer)


def test_a_replica_answers_with_servekits_v2_routes(tmp_path: Path) -> None:
    (tmp_path / "iris").mkdir()
    model = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    joblib.dump(model, tmp_path / "iris" / "model.joblib")
    write_settings(tmp_path, "iris")
    replica = replica_of(tmp_path / "iris")
    status, body = call(replica, "POST", "/v2/models/iris/infer", v2_body(IRIS.data[:4]))
    assert status == 200
    np.testing.assert_array_equal(body["outputs"][0]["data"], model.predict(IRIS.data[:4]))
    assert call(replica, "GET", "/v2/models/nope") == (
        404, {"error": "model 'nope' not found (models served: iris)"})


def test_a_replica_whose_model_fails_to_load_answers_503_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.joblib").write_bytes(b"not a pickle")
    write_settings(tmp_path, "broken")
    replica = replica_of(tmp_path / "broken")  # the replica starts: Ray does not retry it for ever
    status, body = call(replica, "POST", "/v2/models/broken/infer", v2_body(IRIS.data[:1]))
    assert status == 503
    assert "model 'broken' has no ready version" in body["error"]
    assert "cannot load model.joblib: not a readable joblib/pickle file" in body["error"]
    status, body = call(replica, "GET", "/v2/health/ready")
    assert status == 503 and body["ready"] is False


# -- a local cluster ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """``ray start --head`` with 2 CPUs on 127.0.0.1 only, its own ports and token
    (:class:`servekit.ray.local.LocalCluster`); this process connected to it."""
    from servekit.ray.local import LocalCluster

    with LocalCluster(num_cpus=2) as head, pytest.MonkeyPatch.context() as patch:
        for name, value in head.env.items():  # Ray reads them at import: imported below
            patch.setenv(name, value)
        import ray
        from ray import serve

        ray.init(address=head.address, logging_level="WARNING", log_to_driver=False)
        try:
            yield head.address
        finally:
            serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris: a logistic regression (joblib); digits: an XGBoost booster with two versions."""
    root = tmp_path_factory.mktemp("ray-models")
    (root / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target), root / "iris" / "model.joblib")
    write_settings(root, "iris", parallel_workers=1)
    for version, rounds in (("1", 3), ("2", 6)):
        folder = root / "digits" / version
        folder.mkdir(parents=True)
        booster = xgb.train({"objective": "multi:softmax", "num_class": 10, "max_depth": 3},
                            xgb.DMatrix(DIGITS.data, label=DIGITS.target), num_boost_round=rounds)
        booster.save_model(str(folder / "model.json"))
        (folder / "model-settings.json").write_text(json.dumps({
            "name": "digits", "implementation": "mlserver_xgboost.XGBoostModel",
            "max_batch_size": 32, "max_batch_time": 0.002,
            "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4,
            "parameters": {"uri": "./model.json", "version": version}}))
    return root


def write_settings(root: Path, name: str, **fields: Any) -> None:
    (root / name / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"}, **fields}))


@pytest.fixture(scope="module")
def deployed(cluster: str, repository: Path) -> Iterator[Any]:
    from servekit.config import load_server_settings
    from servekit.ray import deploy

    settings = load_server_settings(str(repository), {"http_port": free_port(), "host": "127.0.0.1"})
    out = deploy(str(repository), settings=settings, num_cpus=CPUS)
    yield out


def in_process(root: Path, name: str, x: np.ndarray, version: str = "2") -> np.ndarray:
    """The model's own prediction in this process."""
    if name == "iris":
        return np.asarray(joblib.load(root / "iris" / "model.joblib").predict(x))
    booster = xgb.Booster()
    booster.load_model(str(root / "digits" / version / "model.json"))
    return np.asarray(booster.predict(xgb.DMatrix(x)))


def v2_body(x: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}]}


# -- V2 through the ingress ------------------------------------------------------------------------
def test_health_and_server_metadata(deployed: Any) -> None:
    url = deployed.url
    live = requests.get(f"{url}/v2/health/live", timeout=30)
    assert live.json() == {"live": True}
    assert len(live.headers["x-request-id"]) == 36  # one id (Ray's proxy made it), not two
    assert requests.get(f"{url}/v2/health/ready", timeout=30).json() == {"ready": True}
    meta = requests.get(f"{url}/v2", timeout=30).json()
    assert meta["name"] == "servekit" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_comes_from_the_replica(deployed: Any) -> None:
    url = deployed.url
    digits = requests.get(f"{url}/v2/models/digits", timeout=30).json()
    assert digits["name"] == "digits" and digits["versions"] == ["1", "2"] and digits["platform"] == "xgboost"
    one = requests.get(f"{url}/v2/models/digits/versions/1/ready", timeout=30)
    assert one.json() == {"name": "digits", "version": "1", "ready": True}
    iris = requests.get(f"{url}/v2/models/iris", timeout=30).json()
    assert iris["name"] == "iris" and iris["platform"] == "sklearn"


def test_inference_equals_in_process_predictions(deployed: Any, repository: Path) -> None:
    url = deployed.url
    x = IRIS.data[::7]
    answer = requests.post(f"{url}/v2/models/iris/infer", json={"id": "q1", **v2_body(x)}, timeout=30,
                           headers={"x-request-id": "client-1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "q1" and body["model_name"] == "iris"
    np.testing.assert_array_equal(body["outputs"][0]["data"], in_process(repository, "iris", x))
    # Ray's proxy owns the header: the client's, once (else one Ray made)
    assert answer.headers["x-request-id"] == "client-1"

    d = DIGITS.data[:20]
    for version, path in (("2", "/v2/models/digits/infer"), ("1", "/v2/models/digits/versions/1/infer")):
        answer = requests.post(url + path, json=v2_body(d), timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == version
        np.testing.assert_array_equal(answer.json()["outputs"][0]["data"], in_process(repository, "digits", d, version))


def test_tritonclient_binary_tensors(deployed: Any, repository: Path) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(deployed.url.removeprefix("http://"), network_timeout=60)
    try:
        assert client.is_server_live() and client.is_model_ready("digits")
        x = DIGITS.data[40:72].astype(np.float64)
        inputs = [httpclient.InferInput("input-0", list(x.shape), "FP64")]
        inputs[0].set_data_from_numpy(x, binary_data=True)
        outputs = [httpclient.InferRequestedOutput("predict", binary_data=True)]
        result = client.infer("digits", inputs, outputs=outputs, request_id="triton-1")
        np.testing.assert_array_equal(result.as_numpy("predict").ravel(), in_process(repository, "digits", x))
        assert result.get_response()["id"] == "triton-1"
    finally:
        client.close()


def test_concurrent_requests_are_each_answered_right(deployed: Any, repository: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[np.ndarray, list[Any]]:
        x = DIGITS.data[i * 3:i * 3 + 1 + i % 3]
        answer = requests.post(f"{deployed.url}/v2/models/digits/infer", json=v2_body(x), timeout=60)
        assert answer.status_code == 200, answer.text
        return x, answer.json()["outputs"][0]["data"]

    with ThreadPoolExecutor(12) as pool:
        for x, data in pool.map(one, range(24)):
            np.testing.assert_array_equal(data, in_process(repository, "digits", x))


def test_errors_in_v2_form_and_the_server_keeps_serving(deployed: Any, repository: Path) -> None:
    url = deployed.url
    missing = requests.post(f"{url}/v2/models/nope/infer", json=v2_body(IRIS.data[:1]), timeout=30)
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'nope' not found (models served: digits, iris)"}
    version = requests.post(f"{url}/v2/models/digits/versions/9/infer", json=v2_body(DIGITS.data[:1]), timeout=30)
    assert version.status_code == 404 and "has no version '9'" in version.json()["error"]
    broken = requests.post(f"{url}/v2/models/iris/infer", data=b'{"inputs": [', timeout=30,
                           headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]
    wrong = requests.post(f"{url}/v2/models/iris/infer", json=v2_body(IRIS.data[:2, :3]), timeout=30)
    assert wrong.status_code == 400
    assert wrong.json() == {"error": "model 'iris' expects 4 features per row, got 3"}
    bad_id = requests.get(f"{url}/v2/models/iris", headers={"x-request-id": "a b"}, timeout=30)
    assert bad_id.status_code == 400 and "X-Request-ID" in bad_id.json()["error"]
    load = requests.post(f"{url}/v2/repository/models/iris/load", timeout=30)
    assert load.status_code == 501 and "deploy again" in load.json()["error"]
    route = requests.get(f"{url}/v3/anything", timeout=30)
    assert route.status_code == 404 and "no endpoint" in route.json()["error"]
    ok = requests.post(f"{url}/v2/models/iris/infer", json=v2_body(IRIS.data[:3]), timeout=30)
    assert ok.status_code == 200
    np.testing.assert_array_equal(ok.json()["outputs"][0]["data"], in_process(repository, "iris", IRIS.data[:3]))


def test_repository_index_and_statistics_join_every_model(deployed: Any) -> None:
    url = deployed.url
    rows = requests.post(f"{url}/v2/repository/index", json={}, timeout=30).json()
    assert [(r["name"], r["version"], r["state"]) for r in rows] == [
        ("digits", "1", "READY"), ("digits", "2", "READY"), ("iris", "", "READY")]
    stats = requests.get(f"{url}/v2/models/stats", timeout=30).json()["model_stats"]
    assert {(s["name"], s["version"]) for s in stats} == {("digits", "1"), ("digits", "2"), ("iris", "")}
    assert all(s["inference_count"] >= 1 for s in stats)


# -- replicas follow the settings --------------------------------------------------------------------
def running(app: str = "servekit") -> dict[str, int]:
    from servekit.ray.engine import replicas

    return {name: states.get("RUNNING", 0) for name, states in replicas(app).items()}


def test_autoscaling_settings_reach_ray(deployed: Any) -> None:
    from ray.serve.context import _get_global_client

    assert deployed.models["digits"] == {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4.0}}
    details = _get_global_client().get_serve_details()
    config = details["applications"]["servekit"]["deployments"]["digits"]["deployment_config"]
    assert config["autoscaling_config"]["min_replicas"] == 1
    assert config["autoscaling_config"]["max_replicas"] == 2
    assert config["autoscaling_config"]["target_ongoing_requests"] == 4.0
    assert running()["digits"] >= 1


def test_replicas_scale_up_and_down_with_the_settings(deployed: Any, repository: Path) -> None:
    from servekit.ray import deploy

    settings_of = {"http_port": int(deployed.url.rsplit(":", 1)[1]), "host": "127.0.0.1"}
    from servekit.config import load_server_settings

    assert running()["iris"] == 1
    write_settings(repository, "iris", parallel_workers=2)
    again = deploy(str(repository), settings=load_server_settings(str(repository), settings_of), num_cpus=CPUS)
    assert again.models["iris"] == {"num_replicas": 2}
    assert running()["iris"] == 2
    # both replicas answer, with the same predictions
    for _ in range(6):
        ok = requests.post(f"{deployed.url}/v2/models/iris/infer", json=v2_body(IRIS.data[:5]), timeout=30)
        np.testing.assert_array_equal(ok.json()["outputs"][0]["data"], in_process(repository, "iris", IRIS.data[:5]))
    write_settings(repository, "iris", parallel_workers=1)
    deploy(str(repository), settings=load_server_settings(str(repository), settings_of), num_cpus=CPUS)
    deadline = time.monotonic() + 120
    while running()["iris"] != 1 and time.monotonic() < deadline:  # a stopping replica drains first
        time.sleep(0.5)
    assert running()["iris"] == 1
    assert requests.get(f"{deployed.url}/v2/health/ready", timeout=30).json() == {"ready": True}


def test_the_serve_config_builder_deploys_the_repository(deployed: Any, repository: Path) -> None:
    """``import_path: servekit.ray.engine:app`` with ``args`` (a Serve config file,
    a KubeRay RayService), here through serve.run as Ray does with it."""
    from ray import serve

    from servekit.ray import engine

    with pytest.raises(ConfigError, match="takes the args repository, num_cpus, ingress_replicas, not 'replicas'"):
        engine.app({"repository": str(repository), "replicas": "2"})
    with pytest.raises(ConfigError, match=r"needs args\.repository, a folder of models"):
        engine.app({"repository": str(repository / "nowhere")})
    serve.run(engine.app({"repository": str(repository), "num_cpus": str(CPUS)}), name="servekit", route_prefix="/")
    assert running() == {"_servekit_ingress": 1, "digits": 1, "iris": 1}
    x = DIGITS.data[100:103]
    answer = requests.post(f"{deployed.url}/v2/models/digits/infer", json=v2_body(x), timeout=30)
    np.testing.assert_array_equal(answer.json()["outputs"][0]["data"], in_process(repository, "digits", x))


# -- the command ---------------------------------------------------------------------------------------
def test_servekit_serve_engine_ray(cluster: str, repository: Path, deployed: Any) -> None:
    """The command deploys the same application (replacing the one above, same
    name and port), serves V2 until SIGTERM, then deletes it from the cluster."""
    port = int(deployed.url.rsplit(":", 1)[1])
    env = dict(os.environ)  # with the fixture's RAY_* variables
    process = subprocess.Popen(
        [*SERVEKIT, "serve", "--engine", "ray", str(repository), "--http-port", str(port),
         "--ray-num-cpus", str(CPUS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if "servekit on Ray Serve" in line:
                break
        assert "application 'servekit' with 2 models, V2 REST on http://127.0.0.1:" in "".join(lines), lines
        x = IRIS.data[10:14]
        answer = requests.post(f"http://127.0.0.1:{port}/v2/models/iris/infer", json=v2_body(x), timeout=30)
        np.testing.assert_array_equal(answer.json()["outputs"][0]["data"], in_process(repository, "iris", x))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    from ray import serve

    assert "servekit" not in serve.status().applications


def test_engine_ray_refuses_a_broken_repository(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model-settings.json").write_text(json.dumps({"name": "m", "min_replicas": 3, "max_replicas": 1,
                                                                    "parameters": {"uri": "./model.joblib"}}))
    done = subprocess.run([*SERVEKIT, "serve", "--engine", "ray", str(tmp_path), "--lenient"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"})
    assert done.returncode == 2
    assert "model 'm': min_replicas 3 is more than max_replicas 1" in done.stderr


def test_engine_ray_refuses_torchserve_and_tfserving_modes(tmp_path: Path) -> None:
    done = subprocess.run([*SERVEKIT, "serve", "--engine", "ray", str(tmp_path), "--model-store", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"})
    assert done.returncode == 2
    assert "--model-store asks for TorchServe or TF Serving mode, which runs only with --engine servekit" in done.stderr
