"""Server settings: defaults < settings.json < SERVEKIT_* < flags; model settings in MLServer's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servekit.cli import main
from servekit.config import load_model_settings, load_server_settings
from servekit.errors import ConfigError
from servekit.repository.discovery import discover


def test_precedence(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"http_port": 9001, "grpc_port": 9002, "debug": "true", "parallel_workers": 3}))
    env = {"SERVEKIT_HTTP_PORT": "9100", "SERVEKIT_METRICS_PORT": "9103"}
    settings = load_server_settings(tmp_path, {"http_port": "9200"}, env)
    assert settings.http_port == 9200  # flag over env over file
    assert settings.metrics_port == 9103  # env over default
    assert settings.grpc_port == 9002  # file over default
    assert settings.debug is True and settings.parallel_workers == 3
    assert settings.host == "127.0.0.1"


def test_invalid_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--http-port: Input should be a valid integer"):
        load_server_settings(tmp_path, {"http_port": "eighty"}, {})
    (tmp_path / "settings.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_server_settings(tmp_path, {}, {})


def test_model_settings_mlserver_format(tmp_path: Path) -> None:
    folder = tmp_path / "sklearn"
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps({
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./Fashion_MNIST.joblib", "version": 1, "extra": {"default_output": "predict_proba"}},
        "max_batch_size": 32,
        "max_batch_time": 0.005,
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 784], "parameters": {"content_type": "np"}}],
    }))
    settings = load_model_settings(folder / "model-settings.json")
    assert settings.name == "sklearn"  # the folder's name by default
    assert settings.parameters.version == "1"
    assert settings.resolved_uri() == (folder / "Fashion_MNIST.joblib").resolve()
    assert settings.max_batch_size == 32 and settings.max_batch_time == 0.005
    assert settings.inputs[0]["parameters"]["content_type"] == "np"


def test_discovery_skips_broken_settings_and_keeps_others(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model-settings.json").write_text('{"name": "a", "parameters": {"uri": "m.joblib"}}')
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model-settings.json").write_text('{"name": ')
    errors: list[str] = []
    found = discover(tmp_path, errors)
    assert [s.name for s in found] == ["a"]
    assert "model-settings.json" in errors[0]


def test_cli_reports_config_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "settings.json").write_text('{"http_port": "x"}')
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("servekit: invalid server settings") and "Traceback" not in err


def test_a_repository_that_does_not_exist_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert f"model repository '{tmp_path / 'missing'}' does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port", "--metrics-port"])
def test_an_impossible_port_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str) -> None:
    assert main(["serve", str(tmp_path), flag, "99999"]) == 2
    assert "99999 is not a TCP port (0 to 65535)" in capsys.readouterr().err
