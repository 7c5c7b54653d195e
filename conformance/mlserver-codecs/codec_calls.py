"""MLServer 1.7.1's own codecs (mlserver.codecs) encoding requests and decoding
answers, against one V2 server serving the models of make_models.py; prints one
JSON line per case: {"test", "passed", "detail"}.

Usage: python codec_calls.py HTTP_URL MODELS_FOLDER
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import joblib
import numpy as np
import pandas as pd
import requests
from mlserver.codecs import NumpyCodec, NumpyRequestCodec, PandasCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse, RequestOutput

URL, MODELS = sys.argv[1], Path(sys.argv[2])
IRIS = joblib.load(MODELS / "iris" / "model.joblib")
NAMED = joblib.load(MODELS / "iris-names" / "model.joblib")
FRAME = pd.read_json(MODELS / "rows.json")
X = FRAME.values


def infer(model: str, request: InferenceRequest) -> InferenceResponse:
    answer = requests.post(f"{URL}/v2/models/{model}/infer", data=request.model_dump_json(exclude_none=True),
                           headers={"Content-Type": "application/json"}, timeout=30)
    if answer.status_code != 200:
        raise AssertionError(f"{answer.status_code}: {answer.text.strip()[-300:]}")  # a traceback ends with its error
    return InferenceResponse.model_validate(answer.json())


def same(got: Any, want: Any) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} where {want.shape} is expected"
    assert np.allclose(got, want) if got.dtype.kind == "f" else np.array_equal(got, want), f"{got} != {want}"


def numpy_request(rows: np.ndarray, outputs: list[str] | None = None) -> InferenceRequest:
    request = NumpyRequestCodec.encode_request(rows)
    if outputs:
        request.outputs = [RequestOutput(name=o) for o in outputs]
    return request


def case_numpy_request_decode_response() -> None:
    same(NumpyRequestCodec.decode_response(infer("iris", numpy_request(X))), IRIS.predict(FRAME).reshape(-1, 1))


def case_numpy_decode_output_shape() -> None:
    output = infer("iris", numpy_request(X)).outputs[0]
    same(NumpyCodec.decode_output(output), IRIS.predict(FRAME).reshape(-1, 1))


def case_output_content_type_np() -> None:
    output = infer("iris", numpy_request(X)).outputs[0]
    assert output.parameters is not None and output.parameters.content_type == "np", output.parameters


def case_one_row() -> None:
    same(NumpyRequestCodec.decode_response(infer("iris", numpy_request(X[:1]))), IRIS.predict(FRAME[:1]).reshape(1, 1))


def case_fp32_input() -> None:
    rows = X.astype(np.float32)
    request = InferenceRequest(inputs=[NumpyCodec.encode_input("input-0", rows)])
    same(NumpyRequestCodec.decode_response(infer("iris", request)), IRIS.predict(FRAME).reshape(-1, 1))


def case_predict_proba() -> None:
    response = infer("iris", numpy_request(X, ["predict_proba"]))
    same(NumpyCodec.decode_output(response.outputs[0]), IRIS.predict_proba(FRAME))


def case_predict_and_proba() -> None:
    response = infer("iris", numpy_request(X, ["predict", "predict_proba"]))
    assert [o.name for o in response.outputs] == ["predict", "predict_proba"]
    same(NumpyCodec.decode_output(response.outputs[0]), IRIS.predict(FRAME).reshape(-1, 1))


def case_pandas_request() -> None:
    response = infer("iris", PandasCodec.encode_request(FRAME))
    same(NumpyCodec.decode_output(response.outputs[0]), IRIS.predict(FRAME).reshape(-1, 1))


def case_pandas_decode_response() -> None:
    decoded = PandasCodec.decode_response(infer("iris", PandasCodec.encode_request(FRAME)))
    assert list(decoded.columns) == ["predict"], list(decoded.columns)
    same(decoded["predict"].to_numpy(), IRIS.predict(FRAME))


def case_pandas_columns_reordered() -> None:
    reordered = FRAME[FRAME.columns[::-1]]
    response = infer("iris", PandasCodec.encode_request(reordered))
    same(NumpyCodec.decode_output(response.outputs[0]), IRIS.predict(FRAME).reshape(-1, 1))


def case_string_labels() -> None:
    output = infer("iris-names", numpy_request(X)).outputs[0]
    assert output.datatype == "BYTES", output.datatype
    assert StringCodec.decode_output(output) == NAMED.predict(FRAME).tolist()


def case_string_labels_numpy() -> None:
    output = infer("iris-names", numpy_request(X)).outputs[0]
    same(NumpyCodec.decode_output(output).reshape(-1), NAMED.predict(FRAME))


def case_unknown_output_refused() -> None:
    answer = requests.post(f"{URL}/v2/models/iris/infer", timeout=30,
                           data=numpy_request(X, ["nope"]).model_dump_json(exclude_none=True),
                           headers={"Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, f"{answer.status_code}: {answer.text[:200]}"


def case_response_ids() -> None:
    request = numpy_request(X)
    request.id = "codec-request-1"
    response = infer("iris", request)
    assert response.model_name == "iris" and response.id == "codec-request-1", (response.model_name, response.id)


CASES: dict[str, Callable[[], None]] = {
    name[len("case_"):]: function for name, function in globals().items() if name.startswith("case_")
}

if __name__ == "__main__":
    for name, case in CASES.items():
        try:
            case()
            print(json.dumps({"test": name, "passed": True, "detail": ""}), flush=True)
        except Exception as exc:  # noqa: BLE001 - a failing case is a result
            detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, AssertionError) else traceback.format_exc(limit=2)
            print(json.dumps({"test": name, "passed": False, "detail": detail[-600:]}), flush=True)
