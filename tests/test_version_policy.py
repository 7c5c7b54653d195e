"""Version policies, labels, TF Serving's config file and base-path scanning."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from tfserving_support import CFG1, CFG2

from servekit.config import ModelSettings, ServerSettings, VersionPolicy
from servekit.errors import ConfigError
from servekit.fronts.tfserving.model_config import (
    PROTO_FILE,
    ModelServerConfig,
    parse_model_config,
    read_model_config,
)
from servekit.repository.base_path import VersionWatcher, incomplete_reason, versioned_settings
from servekit.repository.discovery import discover
from servekit.repository.sources import ModelSources
from servekit.repository.version_policy import select_versions


def test_policies_select_versions() -> None:
    found = [3, 1, 10, 2]
    assert select_versions(None, found) == [10]
    assert select_versions(VersionPolicy(kind="latest", num_versions=2), found) == [3, 10]
    assert select_versions(VersionPolicy(kind="all"), found) == [1, 2, 3, 10]
    assert select_versions(VersionPolicy(kind="specific", versions=[2, 7]), found) == [2]
    assert select_versions(VersionPolicy(), []) == []


def test_policy_accepts_tf_serving_spelling_in_model_settings() -> None:
    settings = ModelSettings.model_validate(
        {
            "name": "m",
            "version_policy": {"specific": {"versions": [1, 2]}},
            "version_labels": {"production": 1, "test": 2},
        }
    )
    assert settings.version_policy == VersionPolicy(kind="specific", versions=[1, 2])
    assert settings.version_labels == {"production": "1", "test": "2"}
    assert VersionPolicy.model_validate({"latest": {"num_versions": 3}}).num_versions == 3
    assert VersionPolicy.model_validate({"all": {}}).kind == "all"
    assert VersionPolicy.model_validate("all").kind == "all"


def test_article_config_files_parse() -> None:
    (entry,) = read_entries(CFG1)
    assert entry.name == "regression_experiments"
    assert entry.base_path == Path("/myProject/saved_models")
    assert entry.policy.kind == "all"
    assert entry.labels == {}
    (entry,) = read_entries(CFG2)
    assert entry.policy == VersionPolicy(kind="specific", versions=[1, 2])
    assert entry.labels == {"production": "1", "test": "2"}


def read_entries(text: str, suffix: str = ".conf", folder: Path | None = None) -> list:  # type: ignore[type-arg]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(folder or tmp) / f"models{suffix}"
        path.write_text(text)
        return read_model_config(path)


def test_yaml_and_json_forms_match_the_text_format(tmp_path: Path) -> None:
    yaml_text = """
model_config_list:
  - name: regression_experiments
    base_path: /myProject/saved_models
    model_platform: tensorflow
    model_version_policy: {specific: {versions: [1, 2]}}
    version_labels: {production: 1, test: 2}
"""
    document = {
        "model_config_list": {
            "config": [
                {
                    "name": "regression_experiments",
                    "base_path": "/myProject/saved_models",
                    "model_platform": "tensorflow",
                    "model_version_policy": {"specific": {"versions": ["1", 2]}},
                    "version_labels": {"production": "1", "test": 2},
                }
            ]
        }
    }
    text = read_entries(CFG2)
    assert read_entries(yaml_text, ".yaml") == text
    assert read_entries(json.dumps(document), ".json") == text


def test_relative_base_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (entry,) = read_entries(
        "model_config_list { config { name: 'm' base_path: 'models/m' } }", folder=tmp_path
    )
    assert entry.base_path == tmp_path / "models" / "m"
    assert entry.policy == VersionPolicy(kind="latest", num_versions=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'm' base_path: '/x' model_plateform: 'tf' } }",
         "model_plateform"),
        ("model_config_list { config { base_path: '/x' } }", "has no name"),
        ("model_config_list { config { name: 'm' } }", "has no base_path"),
        ("model_config_list { config { name: 'm' base_path: '/a' }\n"
         " config { name: 'm' base_path: '/b' } }", "configured twice"),
        ("model_config_list { config { name: 'm' base_path: '/a' "
         "model_version_policy { specific { } } } }", "lists no versions"),
        ("model_config_list { config { name: 'm' ", "Expected"),
    ],
)
def test_config_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_entries(text)


def test_embedded_descriptor_matches_the_proto_file(tmp_path: Path) -> None:
    from google.protobuf import descriptor_pb2

    out = tmp_path / "set.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_FILE.parent}",
         f"--descriptor_set_out={out}", str(PROTO_FILE)],
        check=True,
    )
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    embedded = descriptor_pb2.FileDescriptorProto()
    ModelServerConfig.DESCRIPTOR.file.CopyToProto(embedded)
    assert embedded == compiled
    # same field numbers as TF Serving's ModelConfig
    config = ModelServerConfig.DESCRIPTOR.fields_by_name["model_config_list"].message_type
    model = config.fields_by_name["config"].message_type
    numbers = {f.name: f.number for f in model.fields}
    assert numbers == {
        "name": 1, "base_path": 2, "model_platform": 4, "model_version_policy": 7,
        "version_labels": 8,
    }
    parse_model_config(CFG2)


def make_sklearn(folder: Path, scale: float = 1.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = load_diabetes(return_X_y=True)
    joblib.dump(LinearRegression().fit(x, y * scale), folder / "model.joblib")


def test_incomplete_folders_are_not_taken(tmp_path: Path) -> None:
    base = tmp_path / "model"
    make_sklearn(base / "1")
    (base / "2").mkdir()
    (base / "3").mkdir()
    (base / "3" / "model.joblib.part").write_bytes(b"half")
    saved = base / "4"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"graph")
    (saved / "variables" / "variables.index").write_bytes(b"i")
    (saved / "variables" / "variables.data-00000-of-00002").write_bytes(b"d")
    assert incomplete_reason(base / "1") is None
    assert incomplete_reason(base / "2") == "it is empty"
    assert "still being written" in str(incomplete_reason(base / "3"))
    assert incomplete_reason(saved) == "only 1 of 2 variable shards are there"
    (saved / "variables" / "variables.data-00001-of-00002").write_bytes(b"d")
    assert incomplete_reason(saved) is None
    (tmp_path / "x.keras").write_bytes(b"PK\x03\x04 not finished")
    keras_version = base / "5"
    keras_version.mkdir()
    shutil.move(tmp_path / "x.keras", keras_version / "model.keras")
    assert "not a complete archive" in str(incomplete_reason(keras_version))


def test_watcher_waits_for_a_new_folder_to_stop_changing(tmp_path: Path) -> None:
    base = tmp_path / "model"
    make_sklearn(base / "1")
    watcher = VersionWatcher()
    policy = VersionPolicy(kind="all")
    assert [s.version for s in versioned_settings("m", base, policy, watcher)] == ["1"]
    make_sklearn(base / "2")
    # first sight of version 2 after startup: wait one scan for it to settle
    assert [s.version for s in versioned_settings("m", base, policy, watcher)] == ["1"]
    assert [s.version for s in versioned_settings("m", base, policy, watcher)] == ["1", "2"]
    shutil.rmtree(base / "1")
    assert [s.version for s in versioned_settings("m", base, policy, watcher)] == ["2"]


def test_model_settings_policy_and_labels_apply_to_any_runtime(tmp_path: Path) -> None:
    base = tmp_path / "diabetes"
    for version in (1, 2, 3):
        make_sklearn(base / str(version), scale=version)
    (base / "model-settings.json").write_text(
        json.dumps(
            {
                "implementation": "sklearn",
                "version_policy": {"specific": {"versions": [1, 3]}},
                "version_labels": {"stable": 1, "canary": 3},
            }
        )
    )
    found = discover(tmp_path)
    assert [(s.name, s.version, s.implementation) for s in found] == [
        ("diabetes", "1", "sklearn"),
        ("diabetes", "3", "sklearn"),
    ]
    assert found[0].parameters.uri == str(base / "1")
    sources = ModelSources(ServerSettings())
    sources.add_repository(tmp_path)
    assert sources.labels(sources.wanted()) == {"diabetes": {"stable": "1", "canary": "3"}}


def test_plain_numbered_folders_are_one_model(tmp_path: Path) -> None:
    make_sklearn(tmp_path / "models" / "diabetes" / "1")
    make_sklearn(tmp_path / "models" / "diabetes" / "2")
    found = discover(tmp_path / "models")
    assert [(s.name, s.version) for s in found] == [("diabetes", "2")]
