"""Article 000, "Serving Python ML models with ease" (MLServer): its folder
tree, its train.py/test.py/test_models.py and its two configuration files, with
`mlserver start .` typed as `servekit start .`.

The article reads Fashion-MNIST CSVs from ./data; here they are synthetic, in
the same format (a `label` column and 784 integer pixel columns, 10 classes).
Medium lost some of the article's line breaks (`import joblib#Load Training
Data`, `num_round = 50start = …`); they are put back and nothing else changed
unless a comment says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from articles_support import ArticleServer, Ports, python_script

pytest.importorskip("xgboost")

SETTINGS_JSON = """{
    "debug": "true"
}
"""

SKLEARN_MODEL_SETTINGS = """{
    "name": "fashion-sklearn",
    "implementation": "mlserver_sklearn.SKLearnModel",
    "parameters": {
        "uri": "./Fashion_MNIST.joblib",
        "version": "v1"
    }
}
"""

# not printed in the article; the same shape for its XGBoost model
XGBOOST_MODEL_SETTINGS = """{
    "name": "fashion-xgboost",
    "implementation": "mlserver_xgboost.XGBoostModel",
    "parameters": {
        "uri": "./Fashion_MNIST.json",
        "version": "v1"
    }
}
"""

SKLEARN_TRAIN_PY = """
import pandas as pd
from sklearn import svm
import time
import joblib
#Load Training Data
train = pd.read_csv('../../data/fashion-mnist_train.csv', header=0)
y_train = train['label']
X_train = train.drop(['label'], axis=1)
classifier = svm.SVC(kernel="poly", degree=4, gamma=0.1)
#Train Model
start = time.time()
classifier.fit(X_train.values, y_train.values)
end = time.time()
exec_time = end-start
print(f'Execution time: {exec_time} seconds')
#Save Model
# the article writes "Fashion-MNIST.joblib" here, but its model-settings.json and
# its folder tree name the file Fashion_MNIST.joblib; the tree's name is used
joblib.dump(classifier, "Fashion_MNIST.joblib")
"""

SKLEARN_TEST_PY = """
import pandas as pd
import requests
#Import test data, grab the first row and corresponding label
test = pd.read_csv('../../data/fashion-mnist_test.csv', header=0)
y_test = test['label'][0:1]
X_test = test.drop(['label'],axis=1)[0:1]
#Prediction request parameters
inference_request = {
    "inputs": [
        {
          "name": "predict",
          "shape": X_test.shape,
          "datatype": "FP64",
          "data": X_test.values.tolist()
        }
    ]
}
endpoint = "http://localhost:{HTTP_PORT}/v2/models/fashion-sklearn/versions/v1/infer"  # port: 8080 in the article
#Make request and print response
response = requests.post(endpoint, json=inference_request)
print(response.text)
print(y_test.values)
"""

XGBOOST_TRAIN_PY = """
import pandas as pd
import xgboost as xgb
import time
#Load Training Data
train = pd.read_csv('../../data/fashion-mnist_train.csv', header=0)
y_train = train['label']
X_train = train.drop(['label'], axis=1)
dtrain = xgb.DMatrix(X_train.values, label=y_train.values)
#Train Model
params = {
    'max_depth': 5,
    'eta': 0.3,
    'verbosity': 1,
    'objective': 'multi:softmax',
    'num_class' : 10
}
num_round = 50
start = time.time()
bstmodel = xgb.train(params, dtrain, num_round, evals=[(dtrain, 'label')], verbose_eval=10)
end = time.time()
exec_time = end-start
print(f'Execution time: {exec_time} seconds')
#Save Model
bstmodel.save_model('Fashion_MNIST.json')
"""

TEST_MODELS_PY = """
import pandas as pd
import requests
import json
#Import the test data and split the data from the labels
test = pd.read_csv('./data/fashion-mnist_test.csv', header=0)
y_test = test['label']
X_test = test.drop(['label'],axis=1)
#Build the inference request
inference_request = {
    "inputs": [
        {
          "name": "predict",
          "shape": X_test.shape,
          "datatype": "FP64",
          "data": X_test.values.tolist()
        }
    ]
}
#Send the prediction request to the relevant model, compare responses to training labels and calculate accuracy
def infer(model_name, version):
    endpoint = f"http://localhost:{HTTP_PORT}/v2/models/{model_name}/versions/{version}/infer"  # port: 8080 in the article
    response = requests.post(endpoint, json=inference_request) #calculate accuracy
    correct = 0
    for i, prediction in enumerate(json.loads(response.text)['outputs'][0]['data']):
        if y_test[i] == prediction:
            correct += 1
    accuracy = correct / len(y_test)
    print(f'Model Accuracy for {model_name}: {accuracy}')
infer("fashion-xgboost", "v1")
infer("fashion-sklearn", "v1")
"""


def fashion_csv(path: Path, rows: int, seed: int) -> None:
    """Fashion-MNIST's CSV layout (label, pixel1..pixel784), synthetic pixels:
    each class is a noisy copy of its own random picture."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).integers(0, 200, (10, 784))
    labels = np.arange(rows) % 10
    rng.shuffle(labels)
    pixels = np.clip(centers[labels] + rng.integers(-60, 60, (rows, 784)), 0, 255)
    frame = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(1, 785)])
    frame.insert(0, "label", labels)
    frame.to_csv(path, index=False)


@pytest.fixture(scope="module")
def tree(project: Path, module_ports: Ports) -> Path:
    """The article's folder tree, with both models trained by its train.py files."""
    (project / "data").mkdir()
    fashion_csv(project / "data" / "fashion-mnist_train.csv", 300, seed=1)
    fashion_csv(project / "data" / "fashion-mnist_test.csv", 200, seed=2)
    (project / "README.md").write_text("# mlserver-example\n")
    (project / "settings.json").write_text(SETTINGS_JSON)
    (project / "test_models.py").write_text(TEST_MODELS_PY.replace("{HTTP_PORT}", str(module_ports.http)))
    for name, settings, train, test in (
        ("sklearn", SKLEARN_MODEL_SETTINGS, SKLEARN_TRAIN_PY, SKLEARN_TEST_PY),
        ("xgboost", XGBOOST_MODEL_SETTINGS, XGBOOST_TRAIN_PY, SKLEARN_TEST_PY.replace("sklearn", "xgboost")),
    ):
        folder = project / "models" / name
        folder.mkdir(parents=True)
        (folder / "model-settings.json").write_text(settings)
        (folder / "train.py").write_text(train)
        (folder / "test.py").write_text(test.replace("{HTTP_PORT}", str(module_ports.http)))
        assert "Execution time:" in python_script(folder / "train.py")
    return project


@pytest.fixture(scope="module")
def server(tree: Path, module_ports: Ports) -> Iterator[ArticleServer]:
    # `mlserver start .` in the project's root
    with ArticleServer("servekit start .", cwd=tree, env=module_ports.env(),
                       ready_url=f"http://127.0.0.1:{module_ports.http}/v2/health/ready") as process:
        yield process


def expected_predictions(tree: Path) -> dict[str, list[int]]:
    import joblib
    import xgboost as xgb

    X = pd.read_csv(tree / "data" / "fashion-mnist_test.csv").drop(["label"], axis=1).values
    svm = joblib.load(tree / "models" / "sklearn" / "Fashion_MNIST.joblib")
    booster = xgb.Booster(model_file=str(tree / "models" / "xgboost" / "Fashion_MNIST.json"))
    return {"fashion-sklearn": svm.predict(X).tolist(),
            "fashion-xgboost": booster.predict(xgb.DMatrix(X)).astype(int).tolist()}


def test_start_serves_both_models(server: ArticleServer) -> None:
    log = server.log()
    # the article's log: Loaded model 'fashion-sklearn' succesfully. / … 'fashion-xgboost' …
    assert "Loaded model 'fashion-sklearn' version v1" in log
    assert "Loaded model 'fashion-xgboost' version v1" in log
    assert "Traceback" not in log


def test_test_py_prints_the_articles_response(server: ArticleServer, tree: Path) -> None:
    expected = expected_predictions(tree)
    for name in ("sklearn", "xgboost"):
        out = python_script(tree / "models" / name / "test.py").splitlines()
        response = json.loads(out[0])
        # the article's answer, field by field: a request id, the model's name and version,
        # and outputs[0].data holding the class (the article's MLServer printed shape [1] and
        # "parameters": null; today's MLServer answers [1, 1] with content_type np, as servekit)
        assert response["model_name"] == f"fashion-{name}" and response["model_version"] == "v1"
        assert len(response["id"]) == 36
        [output] = response["outputs"]
        assert output["name"] == "predict" and output["datatype"] == "INT64"
        assert output["shape"] in ([1], [1, 1])
        assert output["data"] == expected[f"fashion-{name}"][:1]
        label = pd.read_csv(tree / "data" / "fashion-mnist_test.csv")["label"][0]
        assert out[1] == f"[{label}]"  # print(y_test.values)


def test_test_models_py_prints_each_models_accuracy(server: ArticleServer, tree: Path) -> None:
    out = python_script(tree / "test_models.py").splitlines()
    y_test = pd.read_csv(tree / "data" / "fashion-mnist_test.csv")["label"].to_numpy()
    expected = expected_predictions(tree)
    lines = []
    for name in ("fashion-xgboost", "fashion-sklearn"):
        accuracy = float(np.mean(np.asarray(expected[name]) == y_test))
        assert accuracy > 0.9  # the synthetic classes are easy; a wrong answer would show
        lines.append(f"Model Accuracy for {name}: {accuracy}")
    assert out == lines
