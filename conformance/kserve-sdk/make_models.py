"""The models servekit serves for the KServe SDK's calls, made here offline:
iris (scikit-learn, trained on its bundled data) and echo (a plain Python
class answering every input unchanged). Writes expected.json: the rows the
calls send and the predictions the served model must give; iris.json: the
fitted coefficients, for KServe's own server.

Usage: python make_models.py FOLDER   (with servekit's own interpreter)
"""

import json
import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

ECHO = '''
from servekit.runtimes.base import Runtime
from servekit.tensors import Tensor


class Echo(Runtime):
    """Answers every input unchanged, under its own name."""

    def predict(self, request):
        return self.response(request, [Tensor(t.name, t.data, t.datatype) for t in request.inputs])
'''

root = Path(sys.argv[1])
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(X, y)
(root / "iris").mkdir(parents=True, exist_ok=True)
joblib.dump(model, root / "iris" / "model.joblib")
(root / "iris" / "model-settings.json").write_text(json.dumps(
    {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
     "parameters": {"uri": "./model.joblib", "version": "v1"}}))
(root / "echo").mkdir(exist_ok=True)
(root / "echo" / "echo_model.py").write_text(ECHO)
(root / "echo" / "model-settings.json").write_text(json.dumps({"name": "echo", "implementation": "echo_model.Echo"}))
rows = X[[0, 1, 50, 60, 100, 120]]
# the same fit for KServe's own server (conformance/kserve-sdk/peer_server.py), which has no scikit-learn
(root / "iris.json").write_text(json.dumps({"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()}))
(root / "expected.json").write_text(json.dumps({"rows": rows.tolist(), "predict": model.predict(rows).tolist()}))
