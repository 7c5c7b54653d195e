"""The container and the KServe runtime (deploy/kserve/, Dockerfile).

- The manifests are the KServe SDK's own objects (``V1alpha1ClusterServingRuntime``,
  ``V1beta1InferenceService``), checked by ``tests/kserve_manifests.py`` in the KServe
  SDK 0.21 environment the conformance suite uses (``conformance/kserve-sdk``): the SDK
  cannot be installed beside servekit's own packages.
- servekit started as the runtime's container would start it: the Dockerfile's entry
  point, the runtime's arguments with KServe's ``{{.Name}}`` filled in, its environment
  (the CPU limit through the downward API as the kubelet resolves it) and the model laid
  out as KServe's storage initializer lays out a ``storageUri`` in /mnt/models (a
  temporary folder here), answering V2 REST and gRPC as the model answers in process.
- No container engine runs here: the Dockerfile is checked by hadolint and by what the
  runtime relies on (its user, entry point and extras).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import xgboost as xgb
import yaml
from servers import ROOT, free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.config import load_server_settings
from servekit.repository.discovery import discover

DEPLOY = ROOT / "deploy" / "kserve"
RUNTIME = DEPLOY / "servekit-runtime.yaml"
SERVICES = sorted((DEPLOY / "inferenceservices").glob("*.yaml"))
FORMATS = {"sklearn", "xgboost", "lightgbm", "onnx", "pytorch", "tensorflow"}
IRIS = load_iris()
X = IRIS.data[::10].astype(np.float32)


def _yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    """The KServe SDK 0.21's interpreter (made once, from pinned requirements)."""
    sys.path.insert(0, str(ROOT / "conformance"))
    from suitekit import venv

    folder = ROOT / "conformance" / "kserve-sdk"
    return venv(folder, folder / "requirements.txt") / "python"


def _check(kserve_python: Path, *paths: Path) -> list[dict[str, Any]]:
    done = subprocess.run([str(kserve_python), str(ROOT / "tests" / "kserve_manifests.py"), *map(str, paths)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


# -- the manifests -----------------------------------------------------------------------
def test_manifests_are_kserve_sdk_objects(kserve_python: Path) -> None:
    results = _check(kserve_python, RUNTIME, *SERVICES)
    assert [r["error"] for r in results if not r["ok"]] == []
    assert {r["class"] for r in results} == {"V1alpha1ClusterServingRuntime", "V1beta1InferenceService"}
    assert results[0]["kserve"] == "0.21.0"
    spec = _yaml(RUNTIME)["spec"]
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    assert {f["name"] for f in spec["supportedModelFormats"]} == FORMATS
    services = [_yaml(path)["spec"]["predictor"]["model"] for path in SERVICES]
    assert {s["modelFormat"]["name"] for s in services} == FORMATS  # an example per format
    assert {s["runtime"] for s in services} == {_yaml(RUNTIME)["metadata"]["name"]}
    assert {s["protocolVersion"] for s in services} == {"v2", "grpc-v2"}
    grpc = next(s for s in services if s["protocolVersion"] == "grpc-v2")
    assert grpc["ports"] == [{"name": "h2c", "protocol": "TCP", "containerPort": _arg(spec, "grpc_port")}]


def test_a_misspelt_manifest_is_refused(kserve_python: Path, tmp_path: Path) -> None:
    runtime = RUNTIME.read_text().replace("      args:\n", "      arguments:\n")
    service = (DEPLOY / "inferenceservices" / "sklearn.yaml").read_text().replace("storageUri", "storageURI")
    port = RUNTIME.read_text().replace("runAsUser: 1000", "runAsUser: one-thousand")
    for name, text in (("runtime.yaml", runtime), ("service.yaml", service), ("port.yaml", port)):
        (tmp_path / name).write_text(text)
    results = _check(kserve_python, tmp_path / "runtime.yaml", tmp_path / "service.yaml", tmp_path / "port.yaml")
    assert [r["ok"] for r in results] == [False, False, False]
    assert "V1Container" in results[0]["error"] and "arguments" in results[0]["error"]
    assert results[1]["error"] == "InferenceService.spec.predictor.model: V1beta1ModelSpec has no field 'storageURI'"
    assert "runAsUser" in results[2]["error"]


# -- the Dockerfile ----------------------------------------------------------------------
def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _instruction(name: str) -> list[str]:
    """The JSON (exec) form of the Dockerfile's last ``name`` instruction."""
    found = re.findall(rf"^{name} (\[.*\])$", _dockerfile(), re.MULTILINE)
    value: list[str] = json.loads(found[-1])
    return value


def _image_env() -> dict[str, str]:
    """The final stage's ENV (``KEY=value`` pairs, continued lines joined)."""
    final = _dockerfile().split("\nFROM ")[-1].replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", final, re.MULTILINE):
        env.update(pair.split("=", 1) for pair in line.split())
    return env


def test_dockerfile_passes_hadolint_and_keeps_what_the_runtime_relies_on() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = _dockerfile()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) == 2  # a build stage and a slim one
    assert 'pip install --no-cache-dir ".[${EXTRAS}]"' in text and "ARG EXTRAS=sklearn" in text
    container = _yaml(RUNTIME)["spec"]["containers"][0]
    assert re.search(rf"^USER {container['securityContext']['runAsUser']}:", text, re.MULTILINE)
    assert _instruction("ENTRYPOINT") == ["servekit"]
    assert _instruction("CMD") == ["serve", "/mnt/models"] == container["args"][:2]
    assert _image_env()["SERVEKIT_HOST"] == "0.0.0.0"
    ignored = [line for line in (ROOT / ".dockerignore").read_text().split("\n") if line and line[0] != "#"]
    assert ignored[0] == "*" and "!src/" in ignored and "!pyproject.toml" in ignored


# -- servekit as the runtime's container ---------------------------------------------------
def _arg(spec: dict[str, Any], flag: str) -> int:
    args = spec["containers"][0]["args"]
    return int(next(a.split("=", 1)[1] for a in args if a.startswith(f"--{flag}=")))


def _kubelet_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env as the kubelet resolves it (values, and resourceFieldRef)."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        field = var["valueFrom"]["resourceFieldRef"]
        kind, resource = field["resource"].split(".")
        assert resource == "cpu"
        limit = float(container["resources"][kind][resource].rstrip("m")) / (1000 if "m" in
                                                                            container["resources"][kind][resource] else 1)
        env[var["name"]] = str(math.ceil(limit / float(field.get("divisor", "1"))))
    return env


def _store(storage: Path, fmt: str) -> Any:
    """What KServe's storage initializer leaves in /mnt/models for a storageUri holding
    the format's usual file, and a function giving the model's own predictions."""
    storage.mkdir()
    y = IRIS.target
    if fmt == "sklearn":
        model = LogisticRegression(max_iter=1000).fit(IRIS.data, y)
        joblib.dump(model, storage / "model.joblib")
        return lambda x: model.predict(x)
    if fmt == "xgboost":
        booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "nthread": 1},
                            xgb.DMatrix(IRIS.data, label=y), num_boost_round=5)
        booster.save_model(str(storage / "model.json"))
        return lambda x: np.argmax(booster.inplace_predict(x), axis=1)
    if fmt == "lightgbm":
        lgbm = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
                         lgb.Dataset(IRIS.data, label=y), num_boost_round=5)
        lgbm.save_model(str(storage / "model.txt"))
        return lambda x: np.argmax(lgbm.predict(x), axis=1)
    import onnx
    from onnx import TensorProto, helper

    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["scores"])], "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], weights.ravel().tolist())])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(storage / "model.onnx"))
    return lambda x: x @ weights


@pytest.fixture
def container(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """servekit started from the runtime's container spec for the format's InferenceService."""
    fmt = request.param
    service = next(_yaml(p) for p in SERVICES if _yaml(p)["spec"]["predictor"]["model"]["modelFormat"]["name"] == fmt
                   and _yaml(p)["spec"]["predictor"]["model"]["protocolVersion"] == "v2")
    name = service["metadata"]["name"]
    spec = _yaml(RUNTIME)["spec"]
    runtime = spec["containers"][0]
    predict = _store(tmp_path / "models", fmt)
    ports = {flag: free_port() for flag in ("http_port", "grpc_port", "metrics_port")}
    args = []
    for arg in runtime["args"]:
        arg = arg.replace("{{.Name}}", name).replace("/mnt/models", str(tmp_path / "models"))
        flag = arg[2:].split("=", 1)[0]
        args.append(f"--{flag}={ports[flag]}" if flag in ports else arg)  # free ports for KServe's
    env = {**os.environ, **{k: v for k, v in _image_env().items() if k != "PATH"}, **_kubelet_env(runtime),
           "INFERENCE_SERVICE_NAME": name,  # what KServe adds to every predictor container
           "SERVEKIT_HOST": "127.0.0.1"}  # the image listens on 0.0.0.0; tests stay on loopback
    command = [sys.executable, "-m", *_instruction("ENTRYPOINT"), *args]
    log = tmp_path / "servekit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                start_new_session=True)
    url = f"http://127.0.0.1:{ports['http_port']}"
    try:
        deadline = time.monotonic() + 120
        while "servekit ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield {"url": url, "grpc": f"127.0.0.1:{ports['grpc_port']}", "name": name, "predict": predict,
               "metrics": f"http://127.0.0.1:{ports['metrics_port']}", "log": log, "command": command}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.parametrize("container", ["sklearn", "xgboost", "lightgbm", "onnx"], indirect=True)
def test_the_runtime_container_serves_its_inferenceservice(container: dict[str, Any]) -> None:
    url, name = container["url"], container["name"]
    assert "--root-model-name=" + name in container["command"]
    assert requests.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
    index = requests.post(f"{url}/v2/repository/index", json={}, timeout=10).json()
    assert [(row["name"], row["state"]) for row in index] == [(name, "READY")]
    expected = container["predict"](X)
    body = {"inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}]}
    answer = requests.post(f"{url}/v2/models/{name}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    out = answer.json()["outputs"][0]
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(out["shape"]).reshape(expected.shape), expected,
                               rtol=1e-6)
    client = grpcclient.InferenceServerClient(container["grpc"])
    assert client.is_model_ready(name)
    tensor = grpcclient.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer(name, [tensor])
    got = result.as_numpy(result.get_response().outputs[0].name)
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-6)
    assert "servekit_" in requests.get(f"{container['metrics']}/metrics", timeout=10).text


# -- KServe's and MLServer's variables ----------------------------------------------------------
def test_kserve_and_mlserver_variables(tmp_path: Path) -> None:
    environ = {"MLSERVER_HTTP_PORT": "8080", "MLSERVER_GRPC_PORT": "9000", "MLSERVER_MODEL_NAME": "iris",
               "INFERENCE_SERVICE_NAME": "iris-isvc", "MLSERVER_LOAD_MODELS_AT_STARTUP": "false"}
    settings = load_server_settings(tmp_path, {}, environ)
    assert (settings.http_port, settings.grpc_port, settings.load_models_at_startup) == (8080, 9000, False)
    assert settings.root_model_name == "iris"  # MLServer's variable, when both are set
    assert load_server_settings(tmp_path, {}, {"INFERENCE_SERVICE_NAME": "x"}).root_model_name == "x"
    # settings.json, SERVEKIT_* and flags win over them
    (tmp_path / "settings.json").write_text(json.dumps({"http_port": 7000}))
    settings = load_server_settings(tmp_path, {"grpc_port": 7001}, {**environ, "SERVEKIT_ROOT_MODEL_NAME": "mine"})
    assert (settings.http_port, settings.grpc_port, settings.root_model_name) == (7000, 7001, "mine")
    from servekit.errors import ConfigError

    with pytest.raises(ConfigError, match="MLSERVER_HTTP_PORT: 99999 is not a TCP port"):
        load_server_settings(None, {}, {"MLSERVER_HTTP_PORT": "99999"})


def test_the_model_at_the_root_takes_the_root_name(tmp_path: Path) -> None:
    joblib.dump(LogisticRegression(max_iter=1000).fit(IRIS.data, IRIS.target), tmp_path / "model.joblib")
    assert [s.name for s in discover(tmp_path)] == [tmp_path.name]
    assert [s.name for s in discover(tmp_path, root_name="iris")] == ["iris"]
    # a model-settings.json that names the model keeps its name, as MLServer keeps it
    (tmp_path / "model-settings.json").write_text(json.dumps({"parameters": {"uri": "./model.joblib"}}))
    assert [s.name for s in discover(tmp_path, root_name="iris")] == ["iris"]
    (tmp_path / "model-settings.json").write_text(json.dumps({"name": "own", "parameters": {"uri": "./model.joblib"}}))
    assert [s.name for s in discover(tmp_path, root_name="iris")] == ["own"]
    # TF Serving's layout (version folders), as KServe's TensorFlow examples store it
    versions = tmp_path / "tf"
    (versions / "1").mkdir(parents=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(IRIS.data, IRIS.target), versions / "1" / "model.joblib")
    assert {(s.name, s.version) for s in discover(versions, root_name="flowers")} == {("flowers", "1")}
    # models in subfolders keep their folders' names
    (tmp_path / "model-settings.json").unlink()
    assert sorted(s.name for s in discover(tmp_path, root_name="iris")) == ["iris", "tf"]
