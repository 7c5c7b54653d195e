"""SeldonClient calls (seldon-core's own Python client, as its documentation
writes them) against one running microservice; prints one JSON line per call:
{"test", "success", "response" (the answer as JSON), "message"}.

Usage: python seldon_client_calls.py HOST:PORT [model|router|combiner|transformer]
(the calls for that service type's class: Doubler, EpsilonGreedy, ImageNetCombiner, Scaler)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import requests
from seldon_core.proto import prediction_pb2
from seldon_core.seldon_client import SeldonClient
from seldon_core.utils import seldon_message_to_json

ENDPOINT = sys.argv[1]
GROUP = sys.argv[2] if len(sys.argv) > 2 else "model"
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def as_json(message: object) -> object:
    """The answer as JSON (the gateway calls return a dict already)."""
    if message is None or isinstance(message, dict):
        return message
    return seldon_message_to_json(message)


def main() -> None:
    sc = SeldonClient(microservice_endpoint=ENDPOINT, gateway="seldon", gateway_endpoint=ENDPOINT,
                      transport="rest", client_return_type="proto")
    calls = {"model": model_calls, "router": router_calls, "combiner": combiner_calls,
             "transformer": transformer_calls}[GROUP](sc)
    for name, call in calls.items():
        try:
            result = call()
            response = as_json(result.response)
            print(json.dumps({"test": name, "success": bool(result.success), "response": response,
                              "message": result.msg}), flush=True)
        except Exception as exc:  # noqa: BLE001 - a failing call is a result, not a crash
            print(json.dumps({"test": name, "success": False, "response": None,
                              "message": f"{type(exc).__name__}: {exc}"}), flush=True)


def model_calls(sc: SeldonClient) -> dict[str, Callable[[], Any]]:
    return {
        # the microservice API: form-encoded json=<message>, as SeldonClient sends it
        "microservice predict ndarray": lambda: sc.microservice(method="predict", data=ROWS, payload_type="ndarray"),
        "microservice predict tensor": lambda: sc.microservice(method="predict", data=ROWS, payload_type="tensor"),
        "microservice predict ndarray with names": lambda: sc.microservice(
            method="predict", data=ROWS, payload_type="ndarray", names=NAMES),
        "microservice predict strData": lambda: sc.microservice(method="predict", str_data="hello seldon"),
        "microservice predict binData": lambda: sc.microservice(method="predict", bin_data=b"\x00\x01binary"),
        "microservice predict jsonData": lambda: sc.microservice(method="predict", json_data={"x": [1, 2], "y": "z"}),
        "microservice transform-input": lambda: sc.microservice(method="transform-input", data=ROWS, payload_type="tensor"),
        "microservice transform-output": lambda: sc.microservice(method="transform-output", data=ROWS, payload_type="ndarray"),
        "microservice send-feedback": lambda: feedback(sc),
        # the external API (gateway "seldon": JSON to /api/v1.0/…)
        "predict ndarray (gateway seldon)": lambda: sc.predict(data=ROWS, payload_type="ndarray"),
        "predict tensor with names (gateway seldon)": lambda: sc.predict(data=ROWS, payload_type="tensor", names=NAMES),
        "predict jsonData (gateway seldon)": lambda: sc.predict(json_data={"instances": [[1, 2]]}),
        "feedback (gateway seldon)": lambda: gateway_feedback(sc),
    }


def router_calls(sc: SeldonClient) -> dict[str, Callable[[], Any]]:
    """EpsilonGreedy (n_branches 3, epsilon 0, best_branch 2): route, feedback with routing, route again."""
    return {
        "ROUTER microservice route ndarray": lambda: sc.microservice(method="route", data=ROWS, payload_type="ndarray"),
        "ROUTER microservice route tensor with names": lambda: sc.microservice(
            method="route", data=ROWS, payload_type="tensor", names=NAMES),
        "ROUTER microservice route strData": lambda: sc.microservice(method="route", str_data="route me"),
        "ROUTER microservice send-feedback with routing": lambda: routed_feedback(sc),
        "ROUTER microservice route after feedback": lambda: sc.microservice(method="route", data=ROWS,
                                                                            payload_type="ndarray"),
        "ROUTER microservice predict (no predict method)": lambda: sc.microservice(
            method="predict", data=ROWS, payload_type="ndarray"),
    }


def combiner_calls(sc: SeldonClient) -> dict[str, Callable[[], Any]]:
    """ImageNetCombiner: the mean of two children's outputs."""
    first, second = np.array([[0.1, 0.7, 0.2]]), np.array([[0.3, 0.3, 0.4]])
    return {
        "COMBINER microservice aggregate ndarray": lambda: sc.microservice(
            method="aggregate", datas=[first, second], payload_type="ndarray"),
        "COMBINER microservice aggregate tensor": lambda: sc.microservice(
            method="aggregate", datas=[first, second], payload_type="tensor"),
        "COMBINER microservice aggregate with names": lambda: sc.microservice(
            method="aggregate", datas=[first, second], payload_type="ndarray", names=["a", "b", "c"]),
        "COMBINER microservice aggregate 2-row arrays": lambda: sc.microservice(
            method="aggregate", datas=[ROWS, ROWS * 3], payload_type="tensor"),
    }


def transformer_calls(sc: SeldonClient) -> dict[str, Callable[[], Any]]:
    """Scaler: transform_input divides by 10, transform_output multiplies by 10."""
    return {
        "TRANSFORMER microservice transform-input ndarray": lambda: sc.microservice(
            method="transform-input", data=ROWS, payload_type="ndarray"),
        "TRANSFORMER microservice transform-input tensor with names": lambda: sc.microservice(
            method="transform-input", data=ROWS, payload_type="tensor", names=NAMES),
        "TRANSFORMER microservice transform-input strData": lambda: sc.microservice(
            method="transform-input", str_data="Hello Seldon"),
        "TRANSFORMER microservice transform-output ndarray": lambda: sc.microservice(
            method="transform-output", data=ROWS, payload_type="ndarray"),
        "TRANSFORMER microservice transform-output tensor": lambda: sc.microservice(
            method="transform-output", data=ROWS, payload_type="tensor"),
        "TRANSFORMER microservice transform-output jsonData": lambda: sc.microservice(
            method="transform-output", json_data={"k": [1, 2]}),
        "TRANSFORMER microservice route (no route method)": lambda: sc.microservice(
            method="route", data=ROWS, payload_type="ndarray"),
    }


def routed_feedback(sc: SeldonClient) -> object:
    """Feedback for a prediction this router (unit "0") sent to branch 2."""
    first = sc.microservice(method="route", data=ROWS, payload_type="ndarray")
    response = prediction_pb2.SeldonMessage()
    response.CopyFrom(first.response)
    response.meta.routing["0"] = 2
    return sc.microservice_feedback(prediction_request=first.request, prediction_response=response, reward=1.0)


def feedback(sc: SeldonClient) -> object:
    first = sc.microservice(method="predict", data=ROWS, payload_type="ndarray")
    return sc.microservice_feedback(prediction_request=first.request, prediction_response=first.response, reward=1.0)


def gateway_feedback(sc: SeldonClient) -> object:
    first = sc.predict(data=ROWS, payload_type="ndarray")
    return sc.feedback(prediction_request=first.request, prediction_response=first.response, reward=1.0)


if __name__ == "__main__":
    main()
