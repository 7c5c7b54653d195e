"""TF Serving's model config file: ``model_config_list { config { … } }``.

The text format is parsed with protobuf's ``text_format`` against our own
``model_server_config.proto`` (same field names and numbers as TF Serving's),
so files written for ``tensorflow_model_server`` work unchanged. The same
schema read from JSON or YAML (proto3 JSON mapping) is the structured form::

    model_config_list:
      config:
        - name: regression_experiments
          base_path: /myProject/saved_models
          model_version_policy: {specific: {versions: [1, 2]}}
          version_labels: {production: 1, test: 2}

(``model_config_list`` may also be the list of configs itself).
"""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, text_format
from google.protobuf.message import Message

from servekit.config import VersionPolicy
from servekit.errors import ConfigError

PROTO_FILE = Path(__file__).with_name("model_server_config.proto")

# model_server_config.proto compiled to a FileDescriptorProto (see --regenerate).
# Embedded instead of generated *_pb2 code so any protobuf runtime >= 4 can load it.
_DESCRIPTOR = (
    "Chltb2RlbF9zZXJ2ZXJfY29uZmlnLnByb3RvEhJzZXJ2ZWtpdC50ZnNlcnZpbmci8QMKIUZpbGVTeXN0ZW1TdG9y"
    "YWdlUGF0aFNvdXJjZUNvbmZpZxrLAwoVU2VydmFibGVWZXJzaW9uUG9saWN5EmwKBmxhdGVzdBhkIAEoCzJSLnNl"
    "cnZla2l0LnRmc2VydmluZy5GaWxlU3lzdGVtU3RvcmFnZVBhdGhTb3VyY2VDb25maWcuU2VydmFibGVWZXJzaW9u"
    "UG9saWN5LkxhdGVzdEgAUgZsYXRlc3QSYwoDYWxsGGUgASgLMk8uc2VydmVraXQudGZzZXJ2aW5nLkZpbGVTeXN0"
    "ZW1TdG9yYWdlUGF0aFNvdXJjZUNvbmZpZy5TZXJ2YWJsZVZlcnNpb25Qb2xpY3kuQWxsSABSA2FsbBJyCghzcGVj"
    "aWZpYxhmIAEoCzJULnNlcnZla2l0LnRmc2VydmluZy5GaWxlU3lzdGVtU3RvcmFnZVBhdGhTb3VyY2VDb25maWcu"
    "U2VydmFibGVWZXJzaW9uUG9saWN5LlNwZWNpZmljSABSCHNwZWNpZmljGisKBkxhdGVzdBIhCgxudW1fdmVyc2lv"
    "bnMYASABKA1SC251bVZlcnNpb25zGgUKA0FsbBomCghTcGVjaWZpYxIaCgh2ZXJzaW9ucxgBIAMoA1IIdmVyc2lv"
    "bnNCDwoNcG9saWN5X2Nob2ljZSKTAwoLTW9kZWxDb25maWcSEgoEbmFtZRgBIAEoCVIEbmFtZRIbCgliYXNlX3Bh"
    "dGgYAiABKAlSCGJhc2VQYXRoEiUKDm1vZGVsX3BsYXRmb3JtGAQgASgJUg1tb2RlbFBsYXRmb3JtEn0KFG1vZGVs"
    "X3ZlcnNpb25fcG9saWN5GAcgASgLMksuc2VydmVraXQudGZzZXJ2aW5nLkZpbGVTeXN0ZW1TdG9yYWdlUGF0aFNv"
    "dXJjZUNvbmZpZy5TZXJ2YWJsZVZlcnNpb25Qb2xpY3lSEm1vZGVsVmVyc2lvblBvbGljeRJZCg52ZXJzaW9uX2xh"
    "YmVscxgIIAMoCzIyLnNlcnZla2l0LnRmc2VydmluZy5Nb2RlbENvbmZpZy5WZXJzaW9uTGFiZWxzRW50cnlSDXZl"
    "cnNpb25MYWJlbHMaQAoSVmVyc2lvbkxhYmVsc0VudHJ5EhAKA2tleRgBIAEoCVIDa2V5EhQKBXZhbHVlGAIgASgD"
    "UgV2YWx1ZToCOAFKBAgDEARKBAgFEAZKBAgGEAciSgoPTW9kZWxDb25maWdMaXN0EjcKBmNvbmZpZxgBIAMoCzIf"
    "LnNlcnZla2l0LnRmc2VydmluZy5Nb2RlbENvbmZpZ1IGY29uZmlnInYKEU1vZGVsU2VydmVyQ29uZmlnElEKEW1v"
    "ZGVsX2NvbmZpZ19saXN0GAEgASgLMiMuc2VydmVraXQudGZzZXJ2aW5nLk1vZGVsQ29uZmlnTGlzdEgAUg9tb2Rl"
    "bENvbmZpZ0xpc3RCCAoGY29uZmlnSgQIAhADYgZwcm90bzM="
)


def _message_classes() -> dict[str, type[Message]]:
    from google.protobuf import message_factory

    proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(_DESCRIPTOR))
    pool = descriptor_pool.DescriptorPool()  # private: never clashes with TF's own protos
    pool.Add(proto)
    names = ("ModelServerConfig", "ModelConfigList", "ModelConfig")
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{proto.package}.{name}"))
        for name in names
    }


_CLASSES = _message_classes()
ModelServerConfig = _CLASSES["ModelServerConfig"]


@dataclass(frozen=True)
class ModelConfigEntry:
    """One ``config { … }`` block: a model, its base path, policy and labels."""

    name: str
    base_path: Path
    model_platform: str = ""  # informative: the runtime is chosen from the files
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: dict[str, str] = field(default_factory=dict)


def parse_model_config(text: str, *, structured: bool = False, origin: str = "config") -> Message:
    """The ModelServerConfig message of a text-format (or JSON/YAML) document."""
    message = ModelServerConfig()
    if structured:
        try:
            document = yaml.safe_load(text)  # YAML is a superset of JSON
        except yaml.YAMLError as exc:
            raise ConfigError(f"{origin}: not valid YAML/JSON: {exc}") from None
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise ConfigError(f"{origin}: expected an object with 'model_config_list'")
        listed = document.get("model_config_list")
        if isinstance(listed, list):
            document = {**document, "model_config_list": {"config": listed}}
        try:
            json_format.ParseDict(document, message)
        except json_format.ParseError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        return message
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:  # TF Serving's words, which its test looks for
        raise ConfigError(f"{origin}: Error parsing text-format tensorflow.serving.ModelServerConfig: {exc}") from None
    return message


def read_model_config(path: str | Path) -> list[ModelConfigEntry]:
    """The models of a config file; relative base paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read model config file {path}: {exc}") from None
    structured = path.suffix.lower() in (".json", ".yaml", ".yml") or text.lstrip().startswith("{")
    message = parse_model_config(text, structured=structured, origin=str(path))
    return entries_of(message, path.parent)


def entries_of(message: Any, folder: Path) -> list[ModelConfigEntry]:
    """Validate a ModelServerConfig and turn it into entries."""
    entries: list[ModelConfigEntry] = []
    seen: set[str] = set()
    for index, config in enumerate(message.model_config_list.config):
        where = f"model_config_list config #{index + 1}"
        if not config.name:
            raise ConfigError(f"{where} has no name")
        if config.name in seen:
            raise ConfigError(f"model {config.name!r} is configured twice")
        seen.add(config.name)
        if not config.base_path:
            raise ConfigError(f"{where} ({config.name!r}) has no base_path")
        base = Path(config.base_path)
        if not base.is_absolute():
            base = folder / base
        entries.append(
            ModelConfigEntry(
                name=config.name,
                base_path=base,
                model_platform=config.model_platform,
                policy=_policy(config, where),
                labels={label: str(v) for label, v in sorted(config.version_labels.items())},
            )
        )
    return entries


def _policy(config: Any, where: str) -> VersionPolicy:
    if not config.HasField("model_version_policy"):
        return VersionPolicy()
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy(kind="all")
    if choice == "specific":
        versions = list(policy.specific.versions)
        if not versions:
            raise ConfigError(f"{where} ({config.name!r}): 'specific' policy lists no versions")
        return VersionPolicy(kind="specific", versions=versions)
    num = policy.latest.num_versions if choice == "latest" else 0
    return VersionPolicy(kind="latest", num_versions=max(1, num))


def _regenerate() -> None:
    """Recompile the .proto and rewrite the embedded descriptor in this file."""
    import tempfile

    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(
            ["protoc", f"-I{PROTO_FILE.parent}", f"--descriptor_set_out={out}", str(PROTO_FILE)]
        )
        if code != 0:
            raise SystemExit(code)
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    encoded = base64.b64encode(files.file[0].SerializeToString()).decode()
    lines = "\n".join(f'    "{encoded[i : i + 88]}"' for i in range(0, len(encoded), 88))
    source = Path(__file__).read_text()
    start = source.index("_DESCRIPTOR = (\n") + len("_DESCRIPTOR = (\n")
    end = source.index("\n)\n", start)
    Path(__file__).write_text(source[:start] + lines + source[end:])


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        _regenerate()
    else:
        print("usage: python -m servekit.fronts.tfserving.model_config --regenerate")
