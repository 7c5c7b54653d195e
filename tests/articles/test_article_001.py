"""Article 001, "Deploying ML models with TensorFlow Serving": two Keras
regression models saved as versions 1 and 2 of `saved_models`, served by the
article's `tensorflow_model_server` command lines typed as `servekit serve`,
with its cfg1.conf / cfg2.conf and its curl calls.

Changed, and only that: `/myProject` is this test's project folder, port 9001
is a free port, and the Windows `^` line continuations are the `\\` the article
says to use on Unix. The models (Dense layers fitted to a noisy synthetic
curve) are trained here, small."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from articles_support import ArticleServer, Ports, sh

pytest.importorskip("tensorflow")

from tfserving_support import CFG1, CFG2, ArticleModels, article_models

NAME = "regression_experiments"

# the article's curl lines, `^` as `\`; PORT: 9001 in the article
GET_MODEL = "curl -X GET http:/localhost:PORT/v1/models/regression_experiments"
PREDICT = """curl -X POST "http://localhost:PORT/v1/models/regression_experiments:predict" \\
-H "Content-Type: application/json" \\
-d "{\\"instances\\":[[1.0], [2.0], [5.0]]}\""""
PREDICT_VERSION = """curl -X POST "http://localhost:PORT/v1/models/regression_experiments/versions/V:predict" \\
-H "Content-Type: application/json" \\
-d "{\\"instances\\":[[1.0], [2.0], [5.0]]}\""""
PREDICT_LABEL = """curl -X POST "http://localhost:PORT/v1/models/regression_experiments/labels/L:predict" \\
-H "Content-Type: application/json" \\
-d "{\\"instances\\":[[1.0], [2.0], [5.0]]}\""""


@pytest.fixture(scope="module")
def models() -> ArticleModels:
    return article_models()


@pytest.fixture(scope="module")
def my_project(project: Path, models: ArticleModels) -> Path:
    """myProject/saved_models/1 and /2, cfg1.conf and cfg2.conf beside them."""
    root = project / "myProject"
    models.base_path(root)
    for name, text in (("cfg1.conf", CFG1), ("cfg2.conf", CFG2)):
        (root / name).write_text(text.replace("/myProject", str(root)))
    return root


def curl(line: str, port: int, cwd: Path) -> dict[str, object]:
    out = sh(line.replace("PORT", str(port)), cwd=cwd).stdout
    answer: dict[str, object] = json.loads(out)
    return answer


def status(*versions: str) -> dict[str, object]:
    return {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in versions]}


def start(command: str, my_project: Path, ports: Ports, rest_port: int) -> ArticleServer:
    command = command.replace("/myProject", str(my_project)).replace("9001", str(rest_port))
    return ArticleServer(command, cwd=my_project, env=ports.env(),
                         ready_url=f"http://127.0.0.1:{rest_port}/v1/models/{NAME}")


def test_serving_the_latest_model(my_project: Path, models: ArticleModels, ports: Ports) -> None:
    """4.2: --model_base_path serves only the newest version."""
    command = """servekit serve \\
  --rest_api_port=9001 \\
  --model_name=regression_experiments \\
  --model_base_path=/myProject/saved_models"""
    with start(command, my_project, ports, ports.rest_api) as server:
        assert curl(GET_MODEL, ports.rest_api, my_project) == status("2")
        answer = curl(PREDICT, ports.rest_api, my_project)
        np.testing.assert_allclose(answer["predictions"], models.expected[2], rtol=1e-5, atol=1e-6)
        assert "Traceback" not in server.log()


def test_multiple_versions_from_cfg1(my_project: Path, models: ArticleModels, ports: Ports) -> None:
    """4.3: cfg1.conf's `model_version_policy: {all: {}}` serves versions 1 and 2."""
    command = """servekit serve \\
  --rest_api_port=9001 \\
  --allow_version_labels_for_unavailable_models \\
  --model_config_file=/myProject/cfg1.conf"""
    with start(command, my_project, ports, ports.rest_api):
        assert curl(GET_MODEL, ports.rest_api, my_project) == status("2", "1")
        for version in (1, 2):
            answer = curl(PREDICT_VERSION.replace("/V:", f"/{version}:"), ports.rest_api, my_project)
            np.testing.assert_allclose(answer["predictions"], models.expected[version], rtol=1e-5, atol=1e-6)
        # 4.2's call, without a version: the newest
        answer = curl(PREDICT, ports.rest_api, my_project)
        np.testing.assert_allclose(answer["predictions"], models.expected[2], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def cfg2_server(my_project: Path, module_ports: Ports) -> Iterator[ArticleServer]:
    """4.5's command (4.4's with --model_config_file_poll_wait_seconds=30): one
    server for both sections' calls."""
    command = """servekit serve \\
  --rest_api_port=9001 \\
  --allow_version_labels_for_unavailable_models \\
  --model_config_file=/myProject/cfg2.conf \\
  --model_config_file_poll_wait_seconds=30"""
    with start(command, my_project, module_ports, module_ports.rest_api) as server:
        yield server


def test_version_labels_from_cfg2(cfg2_server: ArticleServer, my_project: Path, models: ArticleModels,
                                  module_ports: Ports) -> None:
    """4.4: the `production` and `test` labels of cfg2.conf."""
    port = module_ports.rest_api
    for label, version in (("production", 1), ("test", 2)):
        answer = curl(PREDICT_LABEL.replace("/L:", f"/{label}:"), port, my_project)
        np.testing.assert_allclose(answer["predictions"], models.expected[version], rtol=1e-5, atol=1e-6)
    assert curl(GET_MODEL, port, my_project) == status("2", "1")


def test_config_file_is_polled(cfg2_server: ArticleServer, my_project: Path, module_ports: Ports) -> None:
    """4.5: the config file is read again every 30 s (an edit applies live:
    tests/test_tfserving_reload.py checks that with a short interval)."""
    assert f"Model config file {my_project / 'cfg2.conf'}: read again every 30 s" in cfg2_server.log()
    # a bad request to a label answers TF Serving's error form, naming what is wrong
    out = sh(PREDICT_LABEL.replace("/L:", "/staging:").replace("PORT", str(module_ports.rest_api)),
             cwd=my_project).stdout
    assert list(json.loads(out)) == ["error"] and "staging" in json.loads(out)["error"]
