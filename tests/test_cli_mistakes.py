"""Every mistake at startup gets one actionable line on stderr naming what to
fix, a non-zero exit and no traceback (unless --debug): a repository that does
not exist, broken or misspelt settings files (refused unless --lenient), a
missing model file, impossible or taken ports, archive names against the name
rule, TF Serving's MODEL_NAME without its base path."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
import requests
from servers import ServerProcess, free_port
from sklearn.linear_model import LogisticRegression

from servekit.cli import main
from servekit.config import load_server_settings
from servekit.errors import ConfigError


def refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """stderr of ``servekit ARGS``, which must exit 2 without a traceback."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("servekit: ") and "Traceback" not in err
    return err


def iris_like(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]], [0, 0, 1, 1])
    joblib.dump(model, folder / "model.joblib")


# -- the repository folder ------------------------------------------------------------
def test_a_folder_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["serve", str(tmp_path / "nope")], capsys)
    assert err == f"servekit: model repository '{tmp_path / 'nope'}' does not exist; give the folder that holds the models\n"


def test_a_file_instead_of_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.joblib").write_bytes(b"x")
    err = refused(["serve", str(tmp_path / "model.joblib")], capsys)
    assert "is a file, not a folder" in err


# -- model-settings.json ------------------------------------------------------------------
def test_a_broken_model_settings_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    iris_like(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model-settings.json").write_text('{"name": "bad",')
    err = refused(["serve", str(tmp_path)], capsys)
    assert err.startswith(f"servekit: cannot read {tmp_path}/bad/model-settings.json: ")
    assert err.rstrip().endswith("fix it, or start with --lenient to serve the other models")
    assert err.count("\n") == 1


def test_unknown_model_keys_are_refused_with_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    iris_like(tmp_path / "m")
    (tmp_path / "m" / "model-settings.json").write_text(json.dumps(
        {"name": "m", "max_batch_sise": 8, "parameters": {"uri": "model.joblib", "verison": "1"}}))
    err = refused(["serve", str(tmp_path)], capsys)
    assert (f"{tmp_path}/m/model-settings.json: 'max_batch_sise' (did you mean 'max_batch_size'?), "
            "'parameters.verison' (did you mean 'version'?) are no model settings") in err


def test_mlserver_model_keys_servekit_does_not_use_are_accepted(tmp_path: Path) -> None:
    from servekit.repository.discovery import startup_problems

    iris_like(tmp_path / "m")
    (tmp_path / "m" / "model-settings.json").write_text(json.dumps({
        "name": "m", "implementation": "mlserver_sklearn.SKLearnModel", "parallel_workers": 2,
        "warm_workers": False, "parameters": {"uri": "./model.joblib", "environment_tarball": None}}))
    assert startup_problems(tmp_path) == []


def test_a_missing_model_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fashion").mkdir()
    (tmp_path / "fashion" / "model-settings.json").write_text(json.dumps(
        {"name": "fashion", "implementation": "sklearn", "parameters": {"uri": "./Fashion_MNIST.joblib"}}))
    err = refused(["serve", str(tmp_path)], capsys)
    assert (f"{tmp_path}/fashion/model-settings.json: parameters.uri './Fashion_MNIST.joblib' does not exist "
            f"(no {tmp_path}/fashion/Fashion_MNIST.joblib)") in err


def test_several_problems_are_listed_one_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model-settings.json").write_text("[]")
    err = refused(["serve", str(tmp_path)], capsys)
    lines = err.splitlines()
    assert lines[0] == (f"servekit: 2 problems in model repository '{tmp_path}' "
                        "(fix them, or start with --lenient to serve the other models):")
    assert lines[1:] == [f"  {tmp_path}/{name}/model-settings.json: expected a JSON object at the top level"
                         for name in ("a", "b")]


def test_lenient_starts_without_the_broken_model_and_says_why(tmp_path: Path) -> None:
    iris_like(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model-settings.json").write_text('{"name": "bad",')
    (tmp_path / "settings.json").write_text(json.dumps({"htp_port": 1}))
    with ServerProcess(["serve", str(tmp_path), "--lenient"]) as server:
        index = requests.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()
        log = server.log()
    assert [(row["name"], row["state"]) for row in index] == [("good", "READY")]
    assert "bad/model-settings.json" in log and "(starting anyway: --lenient)" in log
    assert "'htp_port' is no server setting (did you mean 'http_port'?); ignored (--lenient)" in log


# -- settings.json ------------------------------------------------------------------------
def test_unknown_server_settings_are_refused_with_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"parralel_workers": 2}))
    err = refused(["serve", str(tmp_path)], capsys)
    assert err == (f"servekit: {tmp_path}/settings.json: 'parralel_workers' is no server setting "
                   "(did you mean 'parallel_workers'?) (`servekit serve --help` lists them; --lenient ignores it)\n")


def test_mlserver_settings_servekit_does_not_use_only_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"debug": True, "cors_settings": {}, "gzip_enabled": True}))
    with caplog.at_level(logging.WARNING, "servekit.config"):
        settings = load_server_settings(tmp_path, {}, {})
    assert settings.debug is True
    assert "MLServer's 'cors_settings', 'gzip_enabled' ignored: servekit does not use them" in caplog.text


def test_lenient_in_settings_json_itself(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"lenient": True, "grcp_port": 9}))
    with caplog.at_level(logging.WARNING, "servekit.config"):
        settings = load_server_settings(tmp_path, {}, {})
    assert settings.grpc_port == 8081 and "'grcp_port' is no server setting" in caplog.text


def test_a_broken_settings_json_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "settings.json").write_text("{'http_port': 1}")
    err = refused(["serve", str(tmp_path)], capsys)
    assert err.startswith(f"servekit: cannot read {tmp_path}/settings.json: ")


# -- ports ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("where", "named"), [
    ("flag", "--http-port"), ("env", "SERVEKIT_HTTP_PORT"), ("file", "settings.json 'http_port'"),
])
def test_an_impossible_port_names_where_it_came_from(
    where: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["serve", str(tmp_path)]
    if where == "flag":
        args += ["--http-port", "99999"]
    elif where == "env":
        monkeypatch.setenv("SERVEKIT_HTTP_PORT", "99999")
    else:
        (tmp_path / "settings.json").write_text(json.dumps({"http_port": 99999}))
    err = refused(args, capsys)
    assert err.endswith(f"{named}: 99999 is not a TCP port (0 to 65535)\n")


def test_a_port_in_use_names_its_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    iris_like(tmp_path / "iris")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = refused(["serve", str(tmp_path), "--metrics-port", str(port), "--http-port", str(free_port()),
                       "--grpc-port", str(free_port())], capsys)
    assert err == (f"servekit: cannot listen on 127.0.0.1:{port} (HTTP, --metrics-port): Address already in use; "
                   "stop whatever uses it or give --metrics-port another port\n")


def test_the_real_command_prints_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "servekit", "serve", str(tmp_path), "--http-port", "99999"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == "servekit: invalid server settings: --http-port: 99999 is not a TCP port (0 to 65535)\n"


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        main(["serve", str(tmp_path / "nope"), "--debug"])


# -- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["my model", "a/b", "../up", ""])
def test_archive_refuses_a_name_against_the_rule(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pth").write_bytes(b"weights")
    err = refused(["archive", "--model-name", name, "--version", "1", "--serialized-file", "w.pth",
                   "--handler", "base_handler"], capsys)
    assert f"--model-name {name!r} is not valid: use 1 to 128 letters, digits, '.', '_' or '-'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]


# -- TF Serving's docker variables --------------------------------------------------------------
def test_model_name_without_its_base_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODEL_NAME", "saved_model")
    monkeypatch.delenv("MODEL_BASE_PATH", raising=False)
    err = refused(["serve"], capsys)
    assert err.startswith("servekit: MODEL_NAME=saved_model is set but /models/saved_model does not exist")
    assert "set MODEL_BASE_PATH to the folder that holds that model's folder of versions" in err
    monkeypatch.setenv("MODEL_BASE_PATH", str(tmp_path))
    err = refused(["serve"], capsys)
    assert f"{tmp_path}/saved_model does not exist (under MODEL_BASE_PATH={tmp_path})" in err


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--parallel-workers", "-1", "-1 is too small: it must be at least 0"),
    ("--max-queue-size", "0", "0 is too small: it must be at least 1"),
    ("--keep-alive-seconds", "0", "0.0 is too small: it must be more than 0"),
    ("--max-request-size", "-1", "-1 is too small: it must be at least 1"),
    ("--metrics-endpoint", "metrics", "'metrics' is not a path: it starts with '/' (/metrics)"),
    ("--http-server", "nginx", "Input should be 'servekit' or 'uvicorn'"),
])
def test_impossible_values_are_refused_naming_the_flag(
    flag: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    err = refused(["serve", str(tmp_path), flag, value], capsys)
    assert err == f"servekit: invalid server settings: {flag}: {message}\n"


@pytest.mark.parametrize("host", ["999.1.1.1", "no-such-host.invalid"])
def test_a_host_that_is_not_this_machine(host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    iris_like(tmp_path / "iris")
    err = refused(["serve", str(tmp_path), "--host", host, "--http-port", "0", "--grpc-port", "0",
                   "--metrics-port", "0"], capsys)
    assert err.startswith(f"servekit: cannot listen on host '{host}' (--host): ")
    assert err.rstrip().endswith("give an address of this machine (127.0.0.1 for this machine only, "
                                 "0.0.0.0 for every interface)")


def test_a_folder_without_models_says_what_a_model_looks_like(tmp_path: Path) -> None:
    with ServerProcess(["serve", str(tmp_path)]) as server:
        log = server.log()
    assert f"No models in {tmp_path}: a model is a folder with a model-settings.json" in log
