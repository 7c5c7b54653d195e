"""Shared by the TF Serving tests: a ``servekit serve`` with TF Serving's REST
port, the first article's config files and request body, and its models -
built once per test session: two Keras regression models trained on a few
hundred synthetic points and exported as SavedModels ``1`` and ``2`` (plus a
third, to drop in while serving)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
from servers import ServerProcess, free_port

ARTICLE_INSTANCES = [[1.0], [2.0], [5.0]]
BODY = '{"instances":[[1.0], [2.0], [5.0]]}'  # the article's -d, unescaped
NAME = "regression_experiments"

CFG1 = """model_config_list {
  config {
    name: 'regression_experiments'
    base_path: '/myProject/saved_models'
    model_platform: 'tensorflow'
    model_version_policy: {all: {}}
  }
}
"""

CFG2 = """model_config_list {
  config {
    name: 'regression_experiments'
    base_path: '/myProject/saved_models'
    model_platform: 'tensorflow'
    model_version_policy {
      specific {
        versions: 1
        versions: 2
      }
    }
    version_labels {
      key: 'production'
      value: 1
    }
    version_labels {
      key: 'test'
      value: 2
    }
  }
}
"""


class TFServer(ServerProcess):
    """``servekit serve --rest_api_port=… --port=… ARGS``; ``rest`` is TF Serving's
    REST address, ``tf_grpc`` its gRPC address (free ports, not 8501/8500)."""

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        rest, grpc_port = free_port(), free_port()
        super().__init__(["serve", f"--rest_api_port={rest}", f"--port={grpc_port}", *args], **kwargs)
        self.rest = f"http://127.0.0.1:{rest}"
        self.rest_port = rest
        self.tf_grpc = f"127.0.0.1:{grpc_port}"


def predictions(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"])


@dataclass(frozen=True)
class ArticleModels:
    store: Path  # exported versions: store/1, store/2, store/3
    keras_file: Path  # version 2 as a .keras file
    expected: dict[int, np.ndarray]  # model.predict(ARTICLE_INSTANCES) per version

    def base_path(self, into: Path, versions: tuple[int, ...] = (1, 2)) -> Path:
        """A fresh ``saved_models`` folder holding ``versions``."""
        base = into / "saved_models"
        base.mkdir(parents=True, exist_ok=True)
        for version in versions:
            shutil.copytree(self.store / str(version), base / str(version))
        return base


@functools.cache
def article_models() -> ArticleModels:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-10, 10, size=(300, 1)).astype("float32")
    y = (0.5 * x + 2 * np.sin(x) + rng.normal(0, 0.3, size=x.shape)).astype("float32")
    store = Path(tempfile.mkdtemp(prefix="servekit-tf-"))
    atexit.register(shutil.rmtree, store, True)
    layers = {1: [8], 2: [16, 16], 3: [4]}
    expected = {}
    keras_file = store / "model.keras"
    for version, widths in layers.items():
        model = keras.Sequential(
            [keras.Input((1,)), *(keras.layers.Dense(w, activation="relu") for w in widths),
             keras.layers.Dense(1)]
        )
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)
        model.export(str(store / str(version)), verbose=False)
        expected[version] = model.predict(np.array(ARTICLE_INSTANCES), verbose=0)
        if version == 2:
            model.save(keras_file)
    return ArticleModels(store=store, keras_file=keras_file, expected=expected)


def tf1_half_plus_two(export_dir: Path, bias: float = 2.0) -> None:
    """A TensorFlow 1 style SavedModel built the way TF Serving's test models
    are: ``y = 0.5 * x + bias`` fed either ``x`` directly (``serving_default``)
    or serialized ``tf.Example`` protos with a float feature ``x``
    (``classify_x_to_y``, ``regress_x_to_y``), through ``ParseExample``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    v1 = tf.compat.v1
    builder = v1.saved_model.builder.SavedModelBuilder(str(export_dir))
    with v1.Session(graph=tf.Graph()) as session:
        slope = v1.Variable(0.5, name="a")
        offset = v1.Variable(bias, name="b")
        serialized = v1.placeholder(tf.string, name="tf_example", shape=[None])
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")  # [-1, 1]
        y = tf.identity(slope * x + offset, name="y")
        info = v1.saved_model.utils.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def
        signatures = {
            "serving_default": build({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"),
            "classify_x_to_y": build({"inputs": info(serialized)}, {"scores": info(y)},
                                     "tensorflow/serving/classify"),
            "regress_x_to_y": build({"inputs": info(serialized)}, {"outputs": info(y)},
                                    "tensorflow/serving/regress"),
        }
        session.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
    builder.save()
