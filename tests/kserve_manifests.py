"""Run with the KServe SDK's interpreter: each YAML file given becomes the SDK's
own model object (``V1alpha1ClusterServingRuntime``, ``V1beta1InferenceService``),
built through the classes' constructors from their ``openapi_types`` so that
their client-side checks run, with the Kubernetes client's ``V1Container``,
``V1EnvVar`` … inside them (pydantic models that check types and refuse
unknown fields); a key that no class declares is an error (the API server's
strict field validation refuses it too). Serialised back with the SDK's ApiClient, the object
must equal the file. Prints one JSON line per file."""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import version
from typing import Any

import kserve
import kubernetes.client
import yaml

KINDS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
PRIMITIVES = {"str": str, "int": int, "float": float, "bool": bool, "object": object}


def build(data: Any, klass: str, where: str) -> Any:
    if data is None:
        return None
    if klass.startswith("list["):
        inner = klass[5:-1]
        if not isinstance(data, list):
            raise TypeError(f"{where}: expected a list of {inner}")
        return [build(item, inner, f"{where}[{i}]") for i, item in enumerate(data)]
    if klass.startswith("dict("):
        inner = re.match(r"dict\(([^,]*), (.*)\)", klass).group(2)  # type: ignore[union-attr]
        if not isinstance(data, dict):
            raise TypeError(f"{where}: expected a map")
        return {k: build(v, inner, f"{where}.{k}") for k, v in data.items()}
    if klass in PRIMITIVES:
        expected = PRIMITIVES[klass]
        if expected is not object and not isinstance(data, expected):
            raise TypeError(f"{where}: expected {klass}, got {type(data).__name__} {data!r}")
        return data
    cls = getattr(kserve.models, klass, None) or getattr(kubernetes.client.models, klass)
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a {klass} object")
    if hasattr(cls, "model_validate"):
        # Kubernetes' own classes (V1Container, V1EnvVar …) are pydantic models that forbid
        # unknown fields and check every type themselves
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise ValueError(f"{where}: {klass}: {' '.join(str(exc).split())}") from None
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    unknown = [key for key in data if key not in by_key]
    if unknown:
        raise KeyError(f"{where}: {klass} has no field {', '.join(map(repr, unknown))}")
    kwargs = {by_key[key]: build(value, cls.openapi_types[by_key[key]], f"{where}.{key}")
              for key, value in data.items()}
    return cls(**kwargs)


def same(back: Any, data: Any) -> bool:
    """``back`` (the SDK's serialisation) says what ``data`` says; it may add only
    the empty defaults the SDK fills in (V1beta1ModelSpec's ``name: ""``)."""
    if isinstance(data, dict) and isinstance(back, dict):
        extra = {k: v for k, v in back.items() if k not in data}
        return all(v in ("", None) for v in extra.values()) and all(
            k in back and same(back[k], v) for k, v in data.items())
    if isinstance(data, list) and isinstance(back, list):
        return len(data) == len(back) and all(same(b, d) for b, d in zip(back, data, strict=True))
    return bool(back == data)


def check(path: str) -> dict[str, Any]:
    with open(path) as fh:
        data = yaml.safe_load(fh)
    klass = KINDS.get((data.get("apiVersion"), data.get("kind")))
    if klass is None:
        return {"file": path, "ok": False, "error": f"no KServe class for {data.get('apiVersion')} {data.get('kind')}"}
    try:
        obj = build(data, klass, data.get("kind", ""))
    except (KeyError, TypeError, ValueError) as exc:
        return {"file": path, "ok": False, "class": klass, "error": str(exc.args[0] if isinstance(exc, KeyError) else exc)}
    back = kserve.ApiClient().sanitize_for_serialization(obj)
    ok = same(back, data)
    return {"file": path, "ok": ok, "class": type(obj).__name__, "kserve": version("kserve"),
            "error": "" if ok else f"serialised back differently: {json.dumps(back)}"}


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(json.dumps(check(name)), flush=True)
