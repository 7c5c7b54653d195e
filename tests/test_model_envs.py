"""A model's own environment (``parameters.environment``): servekit.envs and
servekit.runtimes.isolated.

The environments are built offline: a tiny package is written here as a wheel
(a zip with its metadata, as any build backend writes one) into a folder that
``SERVEKIT_ENV_FIND_LINKS`` names (``--no-index --find-links``), the offline
mode. The package exists only in the model's environment, never in the
server's virtualenv.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
from servers import ServerProcess
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.envs import build, wire
from servekit.envs.spec import EnvSpec, read_spec
from servekit.errors import InvalidInput, ModelLoadError
from servekit.tensors import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

PACKAGE = "skenvdemo"
PACKAGE_SOURCE = '''
import numpy as np

VERSION = "1.0"


def transform(x):
    return np.asarray(x, dtype=np.float64) * 3.0 + 1.0


def greet(name):
    return b"hello " + name
'''

MODEL_SOURCE = '''
import os
import sys

import numpy as np

from servekit.runtimes.base import Runtime
from servekit.tensors import Tensor, TensorSpec


class Tripler(Runtime):
    """Needs skenvdemo, which only its own environment has."""

    batch_axis = 0

    def load(self):
        import skenvdemo

        self.lib = skenvdemo
        self.ready = True

    def input_specs(self):
        return [TensorSpec("x", "FP64", [-1, 2]), TensorSpec("name", "BYTES", [-1])]

    def output_specs(self):
        return [TensorSpec("y", "FP64", [-1, 2]), TensorSpec("greeting", "BYTES", [-1])]

    def predict(self, request):
        if request.parameters.get("crash"):
            os._exit(3)
        if request.parameters.get("fail"):
            from servekit.errors import InvalidInput

            raise InvalidInput("the model refuses this request")
        x = request.input("x").data
        names = request.input("name").data
        greetings = np.array([self.lib.greet(n) for n in names.reshape(-1)], dtype=object)
        return self.response(
            request,
            [Tensor("y", self.lib.transform(x)), Tensor("greeting", greetings, "BYTES")],
            prefix=sys.prefix, pid=os.getpid(), version=self.lib.VERSION,
        )
'''


def _wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A pure-Python wheel holding one module, written as build backends write them."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: servekit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return out


def _module(path: Path, name: str):  # the package's code, run in this process for the expected answers
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- what a model may ask for ------------------------------------------------------
def test_requirements_are_names_only(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "# pinned\nScikit_Learn[Alldeps] == 1.5.0  # trailing comment\n\n-r more.txt\n"
        'numpy>=1.26,<3; python_version >= "3.9"\n'
        "requests==2.32.3 \\\n    --hash=sha256:ABCDEF0123\n"
    )
    (tmp_path / "more.txt").write_text("pyyaml\n-c constraints.txt\n")
    (tmp_path / "constraints.txt").write_text("urllib3<3\n")
    spec = read_spec(tmp_path, "requirements.txt")
    assert spec.requirements == (
        "scikit-learn[alldeps]== 1.5.0", "pyyaml", 'numpy>=1.26,<3; python_version >= "3.9"',
        "requests==2.32.3 --hash=sha256:abcdef0123",
    )
    assert spec.constraints == ("urllib3<3",)
    # environment: true finds the same file
    assert read_spec(tmp_path, True) == spec


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("--index-url https://evil.example/simple", "'--index-url'"),
        ("-i https://evil.example/simple", "'-i'"),
        ("--extra-index-url=https://evil.example/simple", "'--extra-index-url'"),
        ("-f /tmp/wheels", "'-f'"),
        ("--trusted-host evil.example", "'--trusted-host'"),
        ("-e .", "'-e'"),
        ("-e git+https://github.com/x/y#egg=y", "'-e'"),
        ("git+https://github.com/x/y", "URLs, paths"),
        ("https://evil.example/pkg-1.0.tar.gz", "URLs, paths"),
        ("pkg @ https://evil.example/pkg-1.0.whl", "URLs, paths"),
        ("pkg@file:///tmp/pkg.whl", "URLs, paths"),
        ("./local/pkg", "URLs, paths"),
        ("/tmp/pkg-1.0-py3-none-any.whl", "URLs, paths"),
        ("../pkg", "URLs, paths"),
        ("-r ../../etc/requirements.txt", "must name a file beside it"),
        ("-r /etc/requirements.txt", "must name a file beside it"),
    ],
)
def test_sources_other_than_the_registry_are_refused(tmp_path: Path, line: str, named: str) -> None:
    (tmp_path / "requirements.txt").write_text(f"numpy\n{line}\n")
    with pytest.raises(ModelLoadError) as caught:
        read_spec(tmp_path, True)
    assert "requirements.txt line 2" in caught.value.message
    assert named in caught.value.message


def test_files_are_bounded(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("numpy\n" * 20000)
    with pytest.raises(ModelLoadError, match="at most 65536"):
        read_spec(tmp_path, True)
    (tmp_path / "requirements.txt").write_text("\n" * 1500 + "numpy\n")
    with pytest.raises(ModelLoadError, match="more than 1000 lines"):
        read_spec(tmp_path, True)
    (tmp_path / "requirements.txt").write_text("-r requirements.txt\n")  # includes itself
    with pytest.raises(ModelLoadError, match="more than 3 deep"):
        read_spec(tmp_path, True)
    with pytest.raises(ModelLoadError, match="no folders"):
        read_spec(tmp_path, "../requirements.txt")
    (tmp_path / "requirements.txt").write_text("# nothing\n")
    with pytest.raises(ModelLoadError, match="lists no requirements"):
        read_spec(tmp_path, True)


def test_mlflow_environment_files(tmp_path: Path) -> None:
    """The files an MLflow model folder has, as mlflow.sklearn.save_model writes them."""
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "requirements.txt").write_text("mlflow==2.16.0\nscikit-learn==1.5.2\n")
    (tmp_path / "python_env.yaml").write_text(
        "python: 3.11.7\nbuild_dependencies:\n- pip==24.2\n- setuptools\n- wheel\ndependencies:\n"
        "- -r requirements.txt\n"
    )
    (tmp_path / "conda.yaml").write_text(
        "channels:\n- conda-forge\ndependencies:\n- python=3.10.14\n- pip<=24.2\n- libgomp\n"
        "- pip:\n  - mlflow==2.16.0\n  - scikit-learn==1.5.2\nname: mlflow-env\n"
    )
    python_env = read_spec(tmp_path, True)  # MLflow's order: python_env.yaml first
    assert python_env.source == "python_env.yaml"
    assert python_env.requirements == ("mlflow==2.16.0", "scikit-learn==1.5.2")
    assert python_env.python == "3.11.7"
    conda = read_spec(tmp_path, "conda.yaml")
    assert conda.requirements == python_env.requirements
    assert conda.python == "3.10.14"
    assert conda.ignored == ("libgomp",)
    # the same requirements are the same environment, whichever file they came from
    assert conda.key() == python_env.key()
    (tmp_path / "conda.yaml").write_text("dependencies:\n- pip:\n  - --extra-index-url https://x.example\n")
    with pytest.raises(ModelLoadError, match=r"conda.yaml pip\[0\]: option '--extra-index-url'"):
        read_spec(tmp_path, "conda.yaml")


def test_the_key_is_the_normalised_content() -> None:
    one = EnvSpec("requirements.txt", ("numpy==2.0", "pyyaml"))
    assert one.key() == EnvSpec("python_env.yaml", ("pyyaml", "numpy==2.0")).key()
    assert one.key() != EnvSpec("requirements.txt", ("numpy==2.1", "pyyaml")).key()
    assert one.key() != one.key({"find_links": "/somewhere"})


# -- the framing -------------------------------------------------------------------
def _roundtrip(pieces: list) -> tuple[dict, bytearray]:
    raw = b"".join(bytes(p) for p in pieces)
    head_len, body_len = wire.parse_prefix(raw[: wire.PREFIX.size], wire.MAX_BODY)
    header = wire.parse_header(raw[wire.PREFIX.size : wire.PREFIX.size + head_len])
    body = bytearray(raw[wire.PREFIX.size + head_len :])
    assert len(body) == body_len
    return header, body


def test_wire_carries_requests_and_responses_exactly() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    flags = np.array([True, False, True])
    names = np.array([b"a", b"", "\u00e9".encode()], dtype=object)
    request = InferenceRequest(
        inputs=[Tensor("x", x), Tensor("flags", flags), Tensor("names", names, "BYTES", {"content_type": "str"}),
                Tensor("empty", np.zeros((0, 5), dtype=np.int64))],
        outputs=[RequestedOutput("y", {"binary_data": True})], id="r-1", parameters={"k": 1, "n": np.int64(5)},
    )
    header, body = _roundtrip(wire.request_message(request))
    back = wire.parse_request(header, body)
    assert back.id == "r-1" and back.parameters == {"k": 1, "n": 5}
    assert back.outputs == [RequestedOutput("y", {"binary_data": True})]
    assert [t.name for t in back.inputs] == ["x", "flags", "names", "empty"]
    np.testing.assert_array_equal(back.inputs[0].data, x)
    assert back.inputs[0].data.dtype == np.float32
    np.testing.assert_array_equal(back.inputs[1].data, flags)
    assert list(back.inputs[2].data) == list(names) and back.inputs[2].parameters == {"content_type": "str"}
    assert back.inputs[3].data.shape == (0, 5)
    response = InferenceResponse("m", [Tensor("y", np.array([[1.5], [2.5]]))], "2", "r-1", {"p": "q"})
    header, body = _roundtrip(wire.response_message(response))
    got = wire.parse_response(header, body)
    assert (got.model_name, got.model_version, got.id, got.parameters) == ("m", "2", "r-1", {"p": "q"})
    np.testing.assert_array_equal(got.outputs[0].data, response.outputs[0].data)


@pytest.mark.parametrize(
    ("entry", "body", "message"),
    [
        ({"name": "y", "datatype": "FP64", "shape": [2], "nbytes": 8}, b"\0" * 8, "is not 8 bytes"),
        ({"name": "y", "datatype": "FP64", "shape": [4], "nbytes": 32}, b"\0" * 8, "claims more bytes"),
        ({"name": "y", "datatype": "OBJECT", "shape": [1], "nbytes": 0}, b"", "bad name, datatype"),
        ({"name": "y", "datatype": "INT8", "shape": [-1], "nbytes": 0}, b"", "must be >= 0"),
        ({"name": "y", "datatype": "INT8", "shape": ["1"], "nbytes": 1}, b"\0", "not a list of integers"),
        ({"name": "y", "datatype": "BYTES", "shape": [1], "nbytes": 6}, b"\xff\0\0\0ab", "ends early"),
        ({"name": "y", "datatype": "BYTES", "shape": [1], "nbytes": 7}, b"\1\0\0\0abc", "left over"),
    ],
)
def test_wire_refuses_what_disagrees_with_the_body(entry: dict, body: bytes, message: str) -> None:
    with pytest.raises(wire.WireError, match=message):
        wire.parse_response({"op": "result", "outputs": [entry]}, bytearray(body))


def test_wire_bounds_messages() -> None:
    with pytest.raises(wire.WireError, match="larger than the bound"):
        wire.parse_prefix(wire.PREFIX.pack(wire.MAGIC, 10, 2000), 1000)
    with pytest.raises(wire.WireError, match="header of"):
        wire.parse_prefix(wire.PREFIX.pack(wire.MAGIC, wire.MAX_HEADER + 1, 0), 1000)
    with pytest.raises(wire.WireError, match="marker"):
        wire.parse_prefix(wire.PREFIX.pack(b"PKL\x80", 1, 0), 1000)
    with pytest.raises(wire.WireError, match="not JSON"):
        wire.parse_header(b"\x80\x04K\x01.")  # a pickle is not accepted
    with pytest.raises(InvalidInput, match="parameters and names take"):
        wire.frame({"op": "predict", "parameters": {"big": "x" * wire.MAX_HEADER}})


# -- served from its own environment, beside a model in the server's ------------------
@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("envs")
    wheels = root / "wheels"
    wheels.mkdir()
    _wheel(wheels, PACKAGE, "1.0", PACKAGE_SOURCE)
    (root / "pkg").mkdir()
    (root / "pkg" / f"{PACKAGE}.py").write_text(PACKAGE_SOURCE)
    models = root / "models"
    own = models / "own-env"
    own.mkdir(parents=True)
    (own / "model.py").write_text(MODEL_SOURCE)
    (own / "requirements.txt").write_text(f"# only here\n{PACKAGE}==1.0\n")
    (own / "model-settings.json").write_text(json.dumps({
        "name": "own-env", "implementation": "model.Tripler", "parameters": {"environment": True},
    }))
    broken = models / "broken-env"
    broken.mkdir()
    (broken / "model.py").write_text(MODEL_SOURCE)
    (broken / "python_env.yaml").write_text("python: 3.11\ndependencies:\n- skenvdemo-missing==9.9\n")
    (broken / "model-settings.json").write_text(json.dumps({
        "name": "broken-env", "implementation": "model.Tripler",
        "parameters": {"environment": "python_env.yaml"},
    }))
    base = models / "iris"
    base.mkdir()
    X, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), base / "model.joblib")
    (base / "model-settings.json").write_text(json.dumps({"name": "iris", "implementation": "sklearn"}))
    return {"root": root, "models": models, "wheels": wheels, "cache": root / "cache", "pkg": root / "pkg"}


def _server(repo: dict[str, Path]) -> ServerProcess:
    return ServerProcess(
        ["serve", str(repo["models"])],
        env={"SERVEKIT_ENV_CACHE": str(repo["cache"]), "SERVEKIT_ENV_FIND_LINKS": str(repo["wheels"]),
             "SERVEKIT_ENV_INSTALLER": "pip"},
    )


def _infer_own(url: str, x: np.ndarray, **parameters: object) -> requests.Response:
    return requests.post(f"{url}/v2/models/own-env/infer", json={
        "parameters": parameters,
        "inputs": [
            {"name": "x", "datatype": "FP64", "shape": list(x.shape), "data": x.reshape(-1).tolist()},
            {"name": "name", "datatype": "BYTES", "shape": [x.shape[0]], "data": [f"n{i}" for i in range(len(x))]},
        ],
    }, timeout=60)


def _marker(repo: dict[str, Path]) -> Path:
    markers = list(repo["cache"].glob("*/servekit-env.json"))
    assert len(markers) == 1, markers  # one environment: the broken one left none
    return markers[0]


def test_served_from_its_own_environment_beside_a_base_model(repository: dict[str, Path]) -> None:
    assert importlib.util.find_spec(PACKAGE) is None  # the server's virtualenv does not have it
    expected = _module(repository["pkg"] / f"{PACKAGE}.py", "skenvdemo_here")
    x = np.array([[0.5, -1.0], [2.0, 3.25], [7.0, 0.0]])
    with _server(repository) as server:
        answer = _infer_own(server.url, x)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["y"]["datatype"] == "FP64" and outputs["y"]["shape"] == [3, 2]
        np.testing.assert_array_equal(np.array(outputs["y"]["data"]).reshape(3, 2), expected.transform(x))
        assert outputs["greeting"]["data"] == ["hello n0", "hello n1", "hello n2"]
        environment = Path(body["parameters"]["prefix"])
        assert environment.parent == repository["cache"].resolve() or environment.parent == repository["cache"]
        assert environment != Path(sys.prefix)
        assert body["parameters"]["version"] == "1.0"

        # the metadata is the model's own, from its process
        meta = requests.get(f"{server.url}/v2/models/own-env", timeout=10).json()
        assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
            ("x", "FP64", [-1, 2]), ("name", "BYTES", [-1])]

        # the model's own errors come back as they would in process
        refused = _infer_own(server.url, x, fail=True)
        assert refused.status_code == 400 and "the model refuses this request" in refused.json()["error"]

        # a model in the server's environment serves beside it
        X, _ = load_iris(return_X_y=True)
        model = joblib.load(repository["models"] / "iris" / "model.joblib")
        iris = requests.post(f"{server.url}/v2/models/iris/infer", json={"inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [5, 4], "data": X[:5].reshape(-1).tolist()}]},
            timeout=30)
        assert iris.status_code == 200, iris.text
        assert iris.json()["outputs"][0]["data"] == model.predict(X[:5]).tolist()

        # a requirement that cannot be installed: that model is unavailable with the installer's reason
        broken = requests.get(f"{server.url}/v2/models/broken-env/ready", timeout=10)
        assert broken.status_code != 200
        index = requests.post(f"{server.url}/v2/repository/index", json={}, timeout=10).json()
        states = {m["name"]: m for m in index}
        assert states["own-env"]["state"] == "READY" and states["iris"]["state"] == "READY"
        assert states["broken-env"]["state"] == "UNAVAILABLE"
        reason = states["broken-env"]["reason"]
        assert "building the environment failed (pip exit code 1)" in reason
        assert "skenvdemo-missing==9.9" in reason  # pip's own last lines
        assert str(repository["root"]) not in reason  # no server paths
        call = requests.post(f"{server.url}/v2/models/broken-env/infer", json={"inputs": []}, timeout=10)
        assert call.status_code == 503 and "skenvdemo-missing" in call.json()["error"]
        assert _infer_own(server.url, x).status_code == 200  # the others keep serving
    built = _marker(repository)
    stamp = built.stat().st_mtime_ns
    log = server.log()
    assert "building its environment" in log and "built its environment" in log

    # a second start reuses the environment: the marker is untouched and nothing is built
    with _server(repository) as again:
        answer = _infer_own(again.url, x)
        assert answer.status_code == 200, answer.text
        np.testing.assert_array_equal(
            np.array(answer.json()["outputs"][0]["data"]).reshape(3, 2), expected.transform(x))
        assert answer.json()["parameters"]["prefix"] == str(environment)
    assert _marker(repository) == built and built.stat().st_mtime_ns == stamp
    assert "own-env': its environment" in again.log() and "is built" in again.log()
    assert "Model 'own-env': building" not in again.log()


def test_a_model_process_that_dies_is_restarted(repository: dict[str, Path]) -> None:
    x = np.array([[1.0, 2.0]])
    with _server(repository) as server:
        first = _infer_own(server.url, x)
        assert first.status_code == 200, first.text
        pid = first.json()["parameters"]["pid"]
        crashed = _infer_own(server.url, x, crash=True)
        assert crashed.status_code == 503
        message = crashed.json()["error"]
        assert "own-env" in message and "exited" in message and "restarted" in message
        # calls get 503 (restarting) until the new process is ready, then answers again
        for _ in range(600):
            again = _infer_own(server.url, x)
            if again.status_code == 200:
                break
            assert again.status_code == 503 and "restarting" in again.json()["error"], again.text
            time.sleep(0.05)
        assert again.status_code == 200
        assert again.json()["parameters"]["pid"] != pid
        np.testing.assert_array_equal(np.array(again.json()["outputs"][0]["data"]), [4.0, 7.0])
        assert "its process exited (exit code 3); restarting it" in server.log()


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH (pip builds the environments)")
def test_uv_builds_the_same_environment(repository: dict[str, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVEKIT_ENV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SERVEKIT_ENV_FIND_LINKS", str(repository["wheels"]))
    monkeypatch.delenv("SERVEKIT_ENV_INSTALLER", raising=False)
    spec = read_spec(repository["models"] / "own-env", True)
    built = build.ensure(spec, "own-env")
    assert built.installer == "uv" and built.built_now
    # the package is there, and servekit (with numpy) is importable behind it
    probe = subprocess.run(
        [str(built.python), "-I", "-c",
         "import skenvdemo, servekit.tensors, numpy, sys; print(skenvdemo.VERSION, sys.prefix)"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["1.0", str(built.path)]
    again = build.ensure(spec, "own-env")
    assert again.path == built.path and not again.built_now


def test_workers_build_one_environment_once(repository: dict[str, Path], tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(repository["models"] / "own-env", models / "own-env")
    cache = tmp_path / "cache"
    server = ServerProcess(
        ["serve", str(models)], workers=2,
        env={"SERVEKIT_ENV_CACHE": str(cache), "SERVEKIT_ENV_FIND_LINKS": str(repository["wheels"]),
             "SERVEKIT_ENV_INSTALLER": "pip"},
    )
    with server:
        for _ in range(10):
            answer = _infer_own(server.url, np.array([[1.0, 1.0]]))
            assert answer.status_code == 200, answer.text
            np.testing.assert_array_equal(answer.json()["outputs"][0]["data"], [4.0, 4.0])
    log = server.log()
    # one worker built it while the other waited on its lock, then found it built
    assert log.count("Model 'own-env': building its environment") == 1
    assert log.count("Model 'own-env': its environment") == 1 and "is built" in log
    assert len(list(cache.glob("*/servekit-env.json"))) == 1
