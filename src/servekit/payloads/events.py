"""One inference as a pair of CloudEvents, in KServe's payload logger format.

Both events carry the same ``id`` (new per inference), ``specversion`` 1.0,
``source`` and KServe's extension attributes ``inferenceservicename`` (the
model), ``namespace``, ``component`` and ``endpoint`` (the version that
answered); servekit adds ``requestid`` (the request id of the logs and the
``X-Request-ID`` header), ``protocol`` (the API the call came in on) and, on
the response, ``statuscode`` (200, or the error's status).

- ``org.kubeflow.serving.inference.request``: the request as V2 JSON, timed
  when the call arrived (no data when the request could not be decoded);
- ``org.kubeflow.serving.inference.response``: the answer as V2 JSON, or the
  error as ``{"error": message}``, timed when the call ended.

The data is the Open Inference Protocol V2 JSON of the request and answer the
model saw, whatever protocol the client spoke: the one form every skin
decodes into, where the wire bytes (protobuf, Triton's binary tensors,
TorchServe's raw bodies) never reach the data plane. An HTTP sink sends
events in binary mode (``ce-*`` headers, the data as the body), a file sink
writes each in structured mode (one JSON object a line, the data inline).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import orjson

from servekit.observability.request_id import header_safe, new_id
from servekit.protocols.v2_codec import encode_response, json_data, wire_shape

if TYPE_CHECKING:
    from servekit.dataplane import InferenceCall
    from servekit.tensors import InferenceRequest

SPEC_VERSION = "1.0"
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
JSON = "application/json"
# characters a header value keeps as they are (CloudEvents' HTTP binding: printable
# ASCII but space, '"' and '%', which are %-encoded like everything else)
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
MAX_ATTRIBUTE = 512  # characters of one attribute value before %-encoding


@dataclass(frozen=True, slots=True)
class Attributes:
    """What is the same on every event of one model version."""

    source: str
    name: str
    namespace: str
    component: str
    endpoint: str  # the version
    request: bool  # mode: log the request, the response, or both
    response: bool


@dataclass(slots=True)
class Event:
    """One CloudEvent: its context attributes (extensions included, as
    strings) and its data (JSON bytes, or None for none)."""

    attributes: dict[str, str]
    data: bytes | None

    @property
    def id(self) -> str:
        return self.attributes["id"]

    def headers(self) -> list[tuple[str, str]]:
        """Binary mode: ``ce-<attribute>`` headers, and ``Content-Type`` for the data."""
        out = [(f"ce-{key}", header_value(value)) for key, value in self.attributes.items()
               if key != "datacontenttype"]
        if self.data is not None:
            out.append(("content-type", JSON))
        return out

    def structured(self) -> bytes:
        """Structured mode: the event as one JSON object, the data inline."""
        document: dict[str, Any] = dict(self.attributes)
        if self.data is not None:
            document["data"] = orjson.Fragment(self.data)
        return orjson.dumps(document)


def header_value(text: str) -> str:
    """An attribute value as an HTTP header value (CloudEvents' %-encoding)."""
    text = text[:MAX_ATTRIBUTE]
    if _PLAIN.fullmatch(text) is not None:
        return text
    return quote(text, safe=_HEADER_SAFE)


_PLAIN = re.compile(r"[\x21\x23-\x24\x26-\x7e]*")  # nothing to encode
_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with microseconds (``2026-12-01T13:04:58.123456Z``)."""
    whole = int(seconds)
    cached = _second
    if cached[0] != whole:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        cached[0] = whole
    return f"{cached[1]}.{int((seconds - whole) * 1e6):06d}Z"


def pair(attributes: Attributes, call: InferenceCall, ended: float) -> list[Event]:
    """The events of one finished call (``ended``: its end, seconds since the epoch)."""
    common = {
        "specversion": SPEC_VERSION,
        "id": new_id(),
        "source": attributes.source,
        "inferenceservicename": attributes.name,
        "namespace": attributes.namespace,
        "component": attributes.component,
        "endpoint": attributes.endpoint,
        "protocol": call.protocol,
    }
    request = call.request
    if request is not None and request.id:
        common["requestid"] = header_safe(request.id)
    events = []
    if attributes.request:
        data = request_body(request) if request is not None else None
        head = {"type": REQUEST, "time": timestamp(ended - call.seconds)}
        if data is not None:
            head["datacontenttype"] = JSON
        events.append(Event({**head, **common}, data))
    if attributes.response:
        if call.error is not None:
            status = call.error.status
            data = orjson.dumps({"error": call.error.message})
        else:
            status = 200
            data = encode_response(call.response)[0] if call.response is not None else None
        head = {"type": RESPONSE, "time": timestamp(ended)}
        if data is not None:
            head["datacontenttype"] = JSON
        events.append(Event({**head, **common, "statuscode": str(status)}, data))
    return events


def request_body(request: InferenceRequest) -> bytes:
    """The request as an Open Inference Protocol V2 JSON body."""
    document: dict[str, Any] = {}
    if request.id:
        document["id"] = request.id
    if request.parameters:
        document["parameters"] = request.parameters
    inputs = []
    for tensor in request.inputs:
        entry: dict[str, Any] = {"name": tensor.name, "shape": wire_shape(tensor), "datatype": tensor.datatype}
        if tensor.parameters:
            entry["parameters"] = tensor.parameters
        entry["data"] = json_data(tensor)
        inputs.append(entry)
    document["inputs"] = inputs
    if request.outputs is not None:
        document["outputs"] = [
            {"name": o.name, "parameters": o.parameters} if o.parameters else {"name": o.name}
            for o in request.outputs
        ]
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY, default=_plain)


def _plain(value: Any) -> Any:
    """What orjson cannot write itself (bytes parameters, numpy scalars) as JSON values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def size_of(call: InferenceCall) -> int:
    """About how many bytes a queued call holds on to (its tensors)."""
    size = 256
    if call.request is not None:
        size += sum(t.data.nbytes for t in call.request.inputs)
    if call.response is not None:
        size += sum(t.data.nbytes for t in call.response.outputs)
    return size


__all__ = ["REQUEST", "RESPONSE", "Attributes", "Event", "pair", "request_body"]
