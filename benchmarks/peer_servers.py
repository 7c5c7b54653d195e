"""The peer servers (KServe, PyTriton, BentoML, LitServe, Ray Serve) as the suite
sees them: how to start each one, where it answers, the request body it takes
and how to read a prediction out of its answer.

Each peer runs ``peers/<peer>/server.py`` (or its own CLI on it) with the Python
of its own environment, ``benchmarks/.venv-<peer>``, which
``peers/install.sh`` makes. The server scripts take their settings from the
environment: PEER_REPO (the model repository), PEER_PORT (HTTP; +1 gRPC, +2
metrics where the peer has them), PEER_BATCHING (1: the peer's best documented
batching setting) and PEER_WORKERS (processes, where the peer has the setting).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = ("kserve", "pytriton", "bentoml", "litserve", "ray")


def v2_body(v2: dict[str, Any]) -> dict[str, Any]:
    return v2


def rows_body(v2: dict[str, Any]) -> dict[str, Any]:
    """The peers without V2 take their own JSON; here one object with the rows as nested lists."""
    return {"rows": v2["inputs"][0]["data"]}


def v1_body(v2: dict[str, Any]) -> dict[str, Any]:
    """KServe's V1 (TF Serving style) request: {"instances": rows}."""
    return {"instances": v2["inputs"][0]["data"]}


def v2_labels(answer: Any) -> list[float]:
    data = answer["outputs"][0]["data"]
    while data and isinstance(data[0], list):  # nested, as some servers answer
        data = [x for row in data for x in row]
    return [float(x) for x in data]


def predictions_labels(answer: Any) -> list[float]:
    return [float(x[0] if isinstance(x, list) else x) for x in answer["predictions"]]


def list_labels(answer: Any) -> list[float]:
    return [float(x[0] if isinstance(x, list) else x) for x in answer]


@dataclass(frozen=True)
class Peer:
    """How the suite talks to one peer server."""

    name: str  # also the environment: benchmarks/.venv-<name>
    protocol: str  # v2 | v1 | rows: the request body it takes
    path: Callable[[str], str]  # model name -> POST path
    ready: Callable[[list[str]], list[str]]  # model names -> GET paths that answer 200 when ready
    cli: tuple[str, ...] = ()  # run with the peer's own CLI (``python -m ...``, the port appended)
    v2_name: Callable[[str], str] = str  # model name -> its name in V2 requests (gRPC's model_name)

    @property
    def python(self) -> Path:
        return HERE / f".venv-{self.name}" / "bin" / "python"

    @property
    def script(self) -> Path:
        return HERE / "peers" / self.name / "server.py"

    def command(self, port: int) -> list[str]:
        if self.cli:
            return [str(self.python), "-m", *self.cli, str(port)]
        return [str(self.python), str(self.script)]

    def body(self, v2: dict[str, Any], protocol: str) -> bytes:
        make = {"v2": v2_body, "v1": v1_body, "rows": rows_body}[protocol]
        return json.dumps(make(v2)).encode()

    def labels(self, answer: Any, protocol: str) -> list[float]:
        read = {"v2": v2_labels, "v1": predictions_labels}.get(protocol)
        if read is None:
            read = list_labels if isinstance(answer, list) else predictions_labels
        return read(answer)


def _v2_ready(models: list[str]) -> list[str]:
    return ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)]


def _snake(model: str) -> str:
    return model.replace("-", "_")


PEER_TABLE: dict[str, Peer] = {
    "kserve": Peer("kserve", "v2", lambda m: f"/v2/models/{m}/infer", _v2_ready),
    "pytriton": Peer("pytriton", "v2", lambda m: f"/v2/models/{_snake(m)}/infer",
                     lambda ms: ["/v2/health/ready", *(f"/v2/models/{_snake(m)}/ready" for m in ms)],
                     v2_name=_snake),
    "bentoml": Peer("bentoml", "rows", lambda m: f"/{_snake(m)}", lambda ms: ["/readyz"],
                    cli=("bentoml", "serve", "service:Classifiers", "--host", "127.0.0.1", "--port")),
    "litserve": Peer("litserve", "rows", lambda m: f"/predict/{m}", lambda ms: ["/health"]),
    "ray": Peer("ray", "rows", lambda m: f"/{m}", lambda ms: [f"/{m}" for m in ms]),
}


def kserve_v1_path(model: str) -> str:
    return f"/v1/models/{model}:predict"
