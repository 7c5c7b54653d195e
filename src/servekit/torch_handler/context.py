"""The ``context`` a handler receives: TorchServe's attribute and method names."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from servekit import __version__


@dataclass
class RequestInfo:
    """Per-request headers in, and status/headers out, of one ``handle`` call."""

    headers: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    phrase: str = ""


class HandlerMetrics:
    """Records what a handler reports with ``context.metrics.add_*``; the last
    values are kept per name so they can be inspected or exported."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[float, str]] = {}

    def add_metric(self, name: str, value: float, unit: str = "", *args: Any, **kwargs: Any) -> None:
        self.values[name] = (float(value), unit)

    def add_time(self, name: str, value: float, idx: Any = None, unit: str = "ms", *args: Any, **kwargs: Any) -> None:
        self.add_metric(name, value, unit)

    def add_counter(self, name: str, value: float, idx: Any = None, *args: Any, **kwargs: Any) -> None:
        previous = self.values.get(name, (0.0, "count"))[0]
        self.add_metric(name, previous + float(value), "count")

    def add_size(self, name: str, value: float, idx: Any = None, unit: str = "MB", *args: Any, **kwargs: Any) -> None:
        self.add_metric(name, value, unit)

    def add_percent(self, name: str, value: float, idx: Any = None, *args: Any, **kwargs: Any) -> None:
        self.add_metric(name, value, "percent")


class Context:
    """What ``initialize(context)`` and ``handle(data, context)`` get."""

    def __init__(
        self,
        model_name: str,
        model_dir: str,
        manifest: dict[str, Any],
        batch_size: int,
        model_yaml_config: dict[str, Any] | None = None,
    ) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self.system_properties: dict[str, Any] = {
            "model_dir": model_dir,
            "gpu_id": None,
            "batch_size": batch_size,
            "server_name": "servekit",
            "server_version": __version__,
            "limit_max_image_pixels": True,
        }
        self.model_yaml_config: dict[str, Any] = model_yaml_config or {}
        self.metrics = HandlerMetrics()
        self.requests: list[RequestInfo] = []
        self.started = time.time()

    # -- per call -----------------------------------------------------------
    def begin(self, requests: list[RequestInfo]) -> None:
        self.requests = requests

    @property
    def request_ids(self) -> dict[int, str]:
        return {i: r.request_id for i, r in enumerate(self.requests)}

    def get_request_id(self, idx: int = 0) -> str:
        return self.requests[idx].request_id

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.requests[idx].headers.get(key.lower())

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return dict(self.requests[idx].headers)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.requests[idx].response_headers[key.lower()] = value

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.requests[idx].response_headers

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.requests[idx].status = int(code)
        self.requests[idx].phrase = phrase

    def get_response_status(self, idx: int) -> int:
        return self.requests[idx].status

    @property
    def model_dir(self) -> str:
        return str(self.system_properties["model_dir"])
