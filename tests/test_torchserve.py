"""TorchServe archives and handlers: the article's CNN (trained here) archived
by the real torch-model-archiver with a handler importing ts.*, the built-in
image_classifier, and batching. The article's own flow (--start, curl, https
management, --stop) is tests/articles/test_article_004.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from servers import SERVEKIT, ServerProcess, free_port

pytest.importorskip("torch")
pytest.importorskip("PIL")

import torch_fixtures


@pytest.fixture(scope="module")
def article(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("article")
    files = torch_fixtures.article_files(folder)
    files["folder"] = folder
    files["expected"] = torch_fixtures.direct_label(files["model"], files["image"])
    return files


def servekit(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVEKIT, *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def curl(*args: str) -> str:
    done = subprocess.run(["curl", "-s", "-S", *args], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def ts_server(store: Path, *args: str, cwd: Path) -> ServerProcess:
    return ServerProcess(["serve", "--model-store", str(store), *args,
                          "--management-port", str(free_port())], cwd=cwd)


def test_archive_from_torch_model_archiver_serves(article: dict[str, Any], tmp_path: Path) -> None:
    """An unchanged TorchServe archive: its handler imports ts.torch_handler."""
    folder = tmp_path / "torchserve_project"
    folder.mkdir()
    for name in ("model.py", "fashion_mnist_model.pth", "index_to_name.json"):
        (folder / name).write_bytes((article["folder"] / name).read_bytes())
    (folder / "handler.py").write_text(textwrap.dedent(torch_fixtures.HANDLER_PY.format(base="ts")))
    store = tmp_path / "store"
    store.mkdir()
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    subprocess.run([str(archiver), "--model-name", "fashion_mnist", "--version", "1.0",
                    "--model-file", "model.py", "--serialized-file", "fashion_mnist_model.pth",
                    "--handler", "handler.py", "--extra-files", "index_to_name.json",
                    "--export-path", str(store)], cwd=folder, check=True)
    with ts_server(store, "--models", "fmnist=fashion_mnist.mar", cwd=tmp_path) as server:
        label = curl("-X", "POST", f"{server.url}/predictions/fmnist", "-T", str(article["image"]))
        assert label == article["expected"]
        bad = requests.post(f"{server.url}/predictions/fmnist", data=b"not an image", timeout=10)
        assert bad.status_code == 400
        assert set(bad.json()) == {"code", "type", "message"} and "image" in bad.json()["message"]
        assert requests.post(f"{server.url}/predictions/nope", data=b"x", timeout=10).json()["code"] == 404
        assert curl("-X", "POST", f"{server.url}/predictions/fmnist", "-T", str(article["image"])) == label


def test_builtin_image_classifier_with_config(article: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "model_config.yaml"
    config.write_text("handler:\n  image_size: 28\n  grayscale: true\n  topk: 3\n")
    store = tmp_path / "store"
    done = servekit("archive", "--model-name", "fmnist_ic", "--model-file", "model.py",
                    "--serialized-file", "fashion_mnist_model.pth", "--handler", "image_classifier",
                    "--extra-files", "index_to_name.json", "--config-file", str(config),
                    "--export-path", str(store), cwd=article["folder"])
    assert done.returncode == 0, done.stderr
    with ts_server(store, "--models", "all", cwd=tmp_path) as server:
        answer = json.loads(curl("-X", "POST", f"{server.url}/predictions/fmnist_ic", "-T", str(article["image"])))
        assert len(answer) == 3 and next(iter(answer)) == article["expected"]
        probabilities = list(answer.values())
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
        v2 = requests.get(f"{server.url}/v2/models/fmnist_ic", timeout=10).json()
        assert v2["platform"] == "torchserve" and v2["inputs"][0]["datatype"] == "BYTES"


BATCH_HANDLER = '''
def handle(data, context):
    if data is None:  # called once at load, as TorchServe does
        return None
    size = len(data)
    return [{"batch": size, "echo": row["body"].decode()} for row in data]
'''


def test_batching_groups_concurrent_requests(tmp_path: Path) -> None:
    (tmp_path / "batch_handler.py").write_text(BATCH_HANDLER)
    store = tmp_path / "store"
    done = servekit("archive", "--model-name", "echo", "--handler", "batch_handler.py:handle",
                    "--export-path", str(store), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    management = free_port()
    server = ServerProcess(["serve", "--model-store", str(store), "--management-port", str(management),
                            "--management-token", "s3cret"], cwd=tmp_path)
    with server:
        auth = {"Authorization": "Bearer s3cret"}
        registered = requests.post(
            f"http://127.0.0.1:{management}/models?url=echo.mar&batch_size=4&max_batch_delay=5000"
            "&initial_workers=1", headers=auth, timeout=30)
        assert registered.status_code == 200, registered.text
        results: list[Any] = [None] * 4

        def call(i: int) -> None:
            results[i] = requests.post(f"{server.url}/predictions/echo", data=f"req{i}", timeout=30).json()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.01)
        for thread in threads:
            thread.join()
        assert results == [{"batch": 4, "echo": f"req{i}"} for i in range(4)]
        described = requests.get(f"http://127.0.0.1:{management}/models/echo", headers=auth, timeout=10).json()
        assert described[0]["batchSize"] == 4 and described[0]["maxBatchDelay"] == 5000
        assert described[0]["servekit"]["batches"] == {"4": 1}


ONE_AT_A_TIME_HANDLER = '''
import time


def handle(data, context):
    if data is None:
        return None
    time.sleep(0.02)  # stay busy so that the other requests queue up meanwhile
    body = data[0]["body"].decode()
    if body == "bad":
        raise ValueError("this body is refused")
    return [{"rows": len(data), "batch_size": context.system_properties["batch_size"], "echo": body}]
'''


def test_batch_size_one_calls_handle_per_request_under_concurrency(tmp_path: Path) -> None:
    """Requests queued while the handler is busy reach it one per handle() call,
    and a failing request fails alone."""
    (tmp_path / "one_handler.py").write_text(ONE_AT_A_TIME_HANDLER)
    store = tmp_path / "store"
    done = servekit("archive", "--model-name", "one", "--handler", "one_handler.py:handle",
                    "--export-path", str(store), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with ts_server(store, "--models", "one=one.mar", cwd=tmp_path) as server:
        bodies = [f"req{i}" for i in range(12)]
        bodies[5] = "bad"
        answers: list[Any] = [None] * len(bodies)

        def call(i: int) -> None:
            answers[i] = requests.post(f"{server.url}/predictions/one", data=bodies[i], timeout=30)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for body, answer in zip(bodies, answers, strict=True):
            if body == "bad":
                assert answer.status_code == 400
                assert answer.json()["type"] == "BadRequestException"
                assert "this body is refused" in answer.json()["message"]
            else:
                assert answer.status_code == 200
                assert answer.json() == {"rows": 1, "batch_size": 1, "echo": body}
