"""Article 002, a cookbook's chapter 23 "Saving, loading and serving trained
models": its scikit-learn, Keras and PyTorch recipes run as written, then what
serves them with servekit in place of the chapter's servers:

- 23.4, the Flask app (`python3 app.py`): `servekit serve .` in the app's folder
  answers the same `/predict` curl call;
- 23.5, `docker run … tensorflow/serving` with `MODEL_NAME=saved_model`:
  `MODEL_NAME=saved_model MODEL_BASE_PATH=$(pwd)/models servekit serve`, the
  SavedModel at models/saved_model/1 as the docker mount puts it;
- 23.6, `seldon-core-microservice MyModel --service-type MODEL` (in docker):
  `servekit microservice MyModel --service-type MODEL`.

Free ports replace 5000, 8501/8500 and 9000 (through SERVEKIT_* variables, the
command lines unchanged; the curl lines have the port rewritten). Lines the
book broke without a `\\` get one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from articles_support import ArticleServer, Ports, python_script, sh

pytest.importorskip("tensorflow")
pytest.importorskip("torch")

# 23.1, its three blocks in one script (the third saves under the sklearn version)
SKLEARN_PY = """
# Load libraries
import joblib
from sklearn.ensemble import RandomForestClassifier
from sklearn import datasets

# Load data
iris = datasets.load_iris()
features = iris.data
target = iris.target

# Create decision tree classifer object
classifer = RandomForestClassifier()

# Train model
model = classifer.fit(features, target)

# Save model as pickle file
joblib.dump(model, "model.pkl")

# Load model from file
classifer = joblib.load("model.pkl")

# Create new observation
new_observation = [[ 5.2,  3.2,  1.1,  0.1]]

# Predict observation's class
print(classifer.predict(new_observation))

# Import library
import sklearn

# Get scikit-learn version
scikit_version = sklearn.__version__

# Save model as pickle file
joblib.dump(model, "model_{version}.pkl".format(version=scikit_version))
"""

# 23.2
KERAS_PY = """
# Load libraries
import numpy as np
from tensorflow import keras

# Set random seed
np.random.seed(0)

# Create model with one hidden layer
input_layer = keras.Input(shape=(10,))
hidden_layer = keras.layers.Dense(10)(input_layer)
output_layer = keras.layers.Dense(1)(input_layer)
model = keras.Model(input_layer, output_layer)
model.compile(optimizer="adam", loss="mean_squared_error")

# Train the model
x_train = np.random.random((1000, 10))
y_train = np.random.random((1000, 1))
model.fit(x_train, y_train)

# Save the model to a directory called `save_model`
# (the book's `model.save("saved_model")` is Keras 2's; Keras 3 writes a SavedModel
# with `model.export`, and `model.save` only takes a .keras file)
model.export("saved_model")

# this test's addition: what the model answers to the book's curl call
import json
print(json.dumps(model.predict(np.array([[1,2,3,4,5,6,7,8,9,10]], dtype="float32"), verbose=0).tolist()))
"""

# 23.3, as written; TORCH_COMPILE_DISABLE=1 (PyTorch's own switch) keeps the
# torch.compile wrapper but skips compiling C++ kernels, minutes on two cores
TORCH_PY = """
# Load libraries
import torch
import torch.nn as nn
import numpy as np
from torch.utils.data import DataLoader, TensorDataset
from torch.optim import RMSprop
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

# Create training and test sets
features, target = make_classification(n_classes=2, n_features=10,
    n_samples=1000)
features_train, features_test, target_train, target_test = train_test_split(
    features, target, test_size=0.1, random_state=1)

# Set random seed
torch.manual_seed(0)
np.random.seed(0)

# Convert data to PyTorch tensors
x_train = torch.from_numpy(features_train).float()
y_train = torch.from_numpy(target_train).float().view(-1, 1)
x_test = torch.from_numpy(features_test).float()
y_test = torch.from_numpy(target_test).float().view(-1, 1)

# Define a neural network using `Sequential`
class SimpleNeuralNet(nn.Module):
    def __init__(self):
        super(SimpleNeuralNet, self).__init__()
        self.sequential = torch.nn.Sequential(
            torch.nn.Linear(10, 16),
            torch.nn.ReLU(),
            torch.nn.Linear(16,16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 1),
            torch.nn.Dropout(0.1), # Drop 10% of neurons
            torch.nn.Sigmoid(),
        )

    def forward(self, x):
        x = self.sequential(x)
        return x

# Initialize neural network
network = SimpleNeuralNet()

# Define loss function, optimizer
criterion = nn.BCELoss()
optimizer = RMSprop(network.parameters())

# Define data loader
train_data = TensorDataset(x_train, y_train)
train_loader = DataLoader(train_data, batch_size=100, shuffle=True)

# Compile the model using torch 2.0's optimizer
network = torch.compile(network)

# Train neural network
epochs = 5
for epoch in range(epochs):
    for batch_idx, (data, target) in enumerate(train_loader):
        optimizer.zero_grad()
        output = network(data)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()

# Save the model after it's been trained
torch.save(
    {
        'epoch': epoch,
        'model_state_dict': network.state_dict(),
        'optimizer_state_dict': optimizer.state_dict(),
        'loss': loss,
    },
    "model.pt"
)

# Reinitialize neural network
network = SimpleNeuralNet()
state_dict = torch.load(
    "model.pt",
    map_location=torch.device('cpu')
    )["model_state_dict"]
network.load_state_dict(state_dict, strict=False)
print(network.eval())
"""

# 23.4: the app servekit stands in for (kept beside the model, not run)
APP_PY = """
# Import libraries
import joblib
from flask import Flask, request

# Instantiate a flask app
app = Flask(__name__)

# Load the model from disk
model = joblib.load("model.pkl")

# Create a predict route that takes JSON data, makes predictions, and
# returns them
@app.route("/predict", methods = ["POST"])
def predict():
    print(request.json)
    inputs = request.json["inputs"]
    prediction = model.predict(inputs)
    return {
        "prediction" : prediction.tolist()
    }

 # Run the app
if __name__ == "__main__":
    app.run()
"""

# 23.6, as written: note that its SimpleNeuralNet has no forward()
MY_MODEL_PY = """
# Import libraries
import torch
import torch.nn as nn
import logging

# Create a PyTorch model class
class SimpleNeuralNet(nn.Module):
    def __init__(self):
        super(SimpleNeuralNet, self).__init__()
        self.sequential = torch.nn.Sequential(
            torch.nn.Linear(10, 16),
            torch.nn.ReLU(),
            torch.nn.Linear(16,16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 1),
            torch.nn.Dropout(0.1), # Drop 10% of neurons
            torch.nn.Sigmoid(),

        )
# Create a Seldon model object with the name `MyModel`
class MyModel(object):

    # Loads the model
    def __init__(self):
        self.network = SimpleNeuralNet()
        self.network.load_state_dict(
            torch.load("model.pt")["model_state_dict"],
            strict=False
        )
        logging.info(self.network.eval())

    # Makes a prediction
    def predict(self, X, features_names=None):
        return self.network.forward(X)
"""

SELDON_CURL = """curl -X POST http://127.0.0.1:PORT/predict  -H 'Content-Type: application/json' \\
    -d '{"data": {"ndarray":[[0, 0, 0, 0, 0, 0, 0, 0, 0]]}}'"""


@pytest.fixture(scope="module")
def chapter(project: Path) -> dict[str, str]:
    """The three recipes run in the project folder; their printed output."""
    out = {}
    for name, code in (("sklearn", SKLEARN_PY), ("keras", KERAS_PY), ("torch", TORCH_PY)):
        (project / f"{name}_recipe.py").write_text(code)
        out[name] = python_script(project / f"{name}_recipe.py",
                                  env={"TORCH_COMPILE_DISABLE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    return out


def test_23_1_scikit_learn_saved_and_loaded(chapter: dict[str, str], project: Path) -> None:
    import sklearn

    assert chapter["sklearn"].strip() == "[0]"  # array([0])
    assert (project / f"model_{sklearn.__version__}.pkl").is_file()


def test_23_4_flask_app_replaced_by_servekit(chapter: dict[str, str], project: Path, ports: Ports) -> None:
    app = project / "app"
    app.mkdir()
    (app / "model.pkl").write_bytes((project / "model.pkl").read_bytes())
    (app / "app.py").write_text(APP_PY)
    # `python3 app.py` → servekit serves the folder's model on the app's route
    with ArticleServer("servekit serve .", cwd=app, env=ports.env(),
                       ready_url=f"http://127.0.0.1:{ports.http}/v2/health/ready"):
        # port: 5000 in the book
        out = sh(f"""curl -X POST http://127.0.0.1:{ports.http}/predict  -H 'Content-Type: application/json' \\
    -d '{{"inputs":[[5.1, 3.5, 1.4, 0.2]]}}'""", cwd=app).stdout
    assert out == '{"prediction":[0]}'


@pytest.fixture(scope="module")
def tf_serving(chapter: dict[str, str], project: Path, module_ports: Ports) -> Iterator[ArticleServer]:
    # docker's `--mount …source=$(pwd)/saved_model,target=/models/saved_model/1`
    (project / "models" / "saved_model").mkdir(parents=True)
    (project / "models" / "saved_model" / "1").symlink_to(project / "saved_model")
    # docker's `-e MODEL_NAME=saved_model`; MODEL_BASE_PATH is /models in the image
    command = "MODEL_NAME=saved_model MODEL_BASE_PATH=$(pwd)/models servekit serve"
    with ArticleServer(command, cwd=project, env=module_ports.env(),
                       ready_url=f"http://127.0.0.1:{module_ports.rest_api}/v1/models/saved_model") as server:
        yield server


def test_23_2_saved_model_folder(chapter: dict[str, str], project: Path) -> None:
    # `ls saved_model`: assets  fingerprint.pb  saved_model.pb  variables (Keras 2 added keras_metadata.pb)
    assert {"assets", "fingerprint.pb", "saved_model.pb", "variables"} <= {p.name for p in (project / "saved_model").iterdir()}


def test_23_5_tf_serving_status_metadata_and_predict(tf_serving: ArticleServer, chapter: dict[str, str],
                                                     project: Path, module_ports: Ports) -> None:
    port = module_ports.rest_api  # 8501 in the book
    # the browser's view of http://localhost:8501/v1/models/saved_model
    status = json.loads(sh(f"curl -s http://localhost:{port}/v1/models/saved_model", cwd=project).stdout)
    assert status == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    meta = json.loads(sh(f"curl -s http://localhost:{port}/v1/models/saved_model/metadata", cwd=project).stdout)
    assert meta["model_spec"] == {"name": "saved_model", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    ((_, tensor_in),) = signature["inputs"].items()
    ((_, tensor_out),) = signature["outputs"].items()
    for tensor, width in ((tensor_in, "10"), (tensor_out, "1")):
        assert tensor["dtype"] == "DT_FLOAT"
        assert tensor["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}, {"size": width, "name": ""}],
                                          "unknown_rank": False}
    out = sh(f"""curl -X POST http://localhost:{port}/v1/models/saved_model:predict \\
    -d '{{"inputs":[[1,2,3,4,5,6,7,8,9,10]]}}'""", cwd=project).stdout
    expected = json.loads(chapter["keras"].strip().splitlines()[-1])
    answer = json.loads(out)
    assert list(answer) == ["outputs"]
    np.testing.assert_allclose(answer["outputs"], expected, rtol=1e-5)


def test_23_3_pytorch_checkpoint(chapter: dict[str, str], project: Path) -> None:
    assert "(4): Linear(in_features=16, out_features=1, bias=True)" in chapter["torch"]
    import torch

    checkpoint = torch.load(project / "model.pt", map_location="cpu")
    assert set(checkpoint) == {"epoch", "model_state_dict", "optimizer_state_dict", "loss"}
    assert checkpoint["epoch"] == 4


def test_23_6_seldon_class_as_written(chapter: dict[str, str], project: Path, ports: Ports) -> None:
    """The book's MyModel as written: its network has no forward(), so the
    predict call raises; servekit answers in Seldon's form with the reason."""
    (project / "MyModel.py").write_text(MY_MODEL_PY)
    with ArticleServer("servekit microservice MyModel --service-type MODEL", cwd=project, env=ports.env(),
                       ready_url=f"http://127.0.0.1:{ports.http}/health/ping") as server:
        assert "(6): Sigmoid()" in server.log()  # logging.info(self.network.eval())
        done = sh(SELDON_CURL.replace("PORT", str(ports.http)) + " -w '\\n%{http_code}'", cwd=project)
    body, code = done.stdout.rsplit("\n", 1)
    status = json.loads(body)["status"]
    assert code == "500" and status["status"] == 1 and status["code"] == -1, body  # Seldon's form
    assert status["reason"] == "MICROSERVICE_INTERNAL_ERROR", body
    assert "NotImplementedError" in status["info"]
    assert 'missing the required "forward" function' in status["info"]


FIXED_MY_MODEL_PY = """
import torch

from torch_recipe_net import SimpleNeuralNet


class MyModel(object):
    def __init__(self):
        self.network = SimpleNeuralNet()
        state = torch.load("model.pt")["model_state_dict"]
        # torch.compile's wrapper saved every key under _orig_mod.
        self.network.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in state.items()})
        self.network.eval()

    def predict(self, X, features_names=None):
        with torch.inference_mode():
            return self.network(torch.from_numpy(X).float()).numpy()
"""


def test_23_6_seldon_class_with_forward(chapter: dict[str, str], project: Path, ports: Ports) -> None:
    """The class with the recipe's forward() and a numpy-to-tensor step: the
    book's 9 zeros are refused with torch's own message, 10 features answer."""
    folder = project / "seldon_fixed"
    folder.mkdir()
    net = TORCH_PY[TORCH_PY.index("class SimpleNeuralNet"):TORCH_PY.index("# Initialize neural network")]
    (folder / "torch_recipe_net.py").write_text("import torch\nimport torch.nn as nn\n\n\n" + net)
    (folder / "MyModel.py").write_text(FIXED_MY_MODEL_PY)
    (folder / "model.pt").write_bytes((project / "model.pt").read_bytes())
    with ArticleServer("servekit microservice MyModel --service-type MODEL", cwd=folder, env=ports.env(),
                       ready_url=f"http://127.0.0.1:{ports.http}/health/ping"):
        done = sh(SELDON_CURL.replace("PORT", str(ports.http)) + " -w '\\n%{http_code}'", cwd=folder)
        body, code = done.stdout.rsplit("\n", 1)
        assert code == "500"
        assert "mat1 and mat2 shapes cannot be multiplied (1x9 and 10x16)" in json.loads(body)["status"]["info"]
        ten = sh(SELDON_CURL.replace("PORT", str(ports.http)).replace("[[0, 0, 0, 0, 0, 0, 0, 0, 0]]", "[[0.5, -1, 2, 0, 0, 1, 0, 0, 3, 1]]"),
                 cwd=folder).stdout
    import torch

    sys_path_net: dict[str, object] = {}
    exec(compile("import torch\nimport torch.nn as nn\n" + net, "net", "exec"), sys_path_net)
    network = sys_path_net["SimpleNeuralNet"]()  # type: ignore[operator]
    state = torch.load(project / "model.pt", map_location="cpu")["model_state_dict"]
    network.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in state.items()})
    network.eval()
    with torch.inference_mode():
        expected = network(torch.tensor([[0.5, -1, 2, 0, 0, 1, 0, 0, 3, 1]])).numpy()
    answer = json.loads(ten)
    assert answer["data"]["names"] == ["t:0"] and answer["meta"] == {}
    np.testing.assert_allclose(answer["data"]["ndarray"], expected, rtol=1e-5)
