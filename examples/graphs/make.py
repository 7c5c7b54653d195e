"""A model repository of inference graphs over scikit-learn iris models
(trained here, from scikit-learn's bundled data; nothing is downloaded).

    python examples/graphs/make.py graphs-repo && servekit serve graphs-repo

- ``scaler`` (StandardScaler, answers ``transform``), ``iris-lr`` (logistic
  regression on scaled features), ``iris-tree`` (a decision tree on raw ones);
- ``iris-chain``: Sequence, scaler's ``transform`` fed to iris-lr as its input;
- ``iris-vote``: Ensemble of the chain and the tree (``graph.yaml``), outputs
  ``chain.predict`` and ``iris-tree.predict``;
- ``iris-route``: Switch, the tree when the request's parameters say
  ``"model": "tree"``, else the chain (a graph inside a graph).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier


def main(root: Path) -> None:
    X, y = load_iris(return_X_y=True)
    scaler = StandardScaler().fit(X)
    models = {
        "scaler": (scaler, "transform"),
        "iris-lr": (LogisticRegression(max_iter=500).fit(scaler.transform(X), y), None),
        "iris-tree": (DecisionTreeClassifier(random_state=0).fit(X, y), None),
    }
    for name, (model, output) in models.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, folder / "model.joblib")
        extra = {"default_output": output} if output else {}
        settings = {"name": name, "parameters": {"uri": "model.joblib", "extra": extra}}
        (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    chain = {"routerType": "Sequence", "steps": [
        {"serviceName": "scaler"},
        {"serviceName": "iris-lr", "map": {"transform": "input-0"}},  # scaler's output, as iris-lr's input
    ]}
    graphs = {
        "iris-chain": {"nodes": {"root": chain}},
        "iris-route": {"nodes": {"root": {"routerType": "Switch", "steps": [
            {"serviceName": "iris-tree", "condition": '[@this].#(parameters.model=="tree")'},
            {"serviceName": "iris-chain"},
        ]}}},
    }
    for name, graph in graphs.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        settings = {"name": name, "implementation": "graph", "graph": graph}
        (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    vote = root / "iris-vote"
    vote.mkdir(parents=True, exist_ok=True)
    (vote / "graph.yaml").write_text(yaml.safe_dump({"nodes": {
        "root": {"routerType": "Ensemble", "steps": [{"nodeName": "chain"}, {"serviceName": "iris-tree"}]},
        "chain": chain,
    }}, sort_keys=False))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "graphs-repo"))
