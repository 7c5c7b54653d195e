"""CatBoost models: CatBoost's own binary files (.cbm) and pickled/joblib
CatBoostClassifier/CatBoostRegressor objects.

A ``.cbm`` file says what it was trained for: a classification loss (Logloss,
CrossEntropy, MultiClass, MultiClassOneVsAll) serves ``predict`` (the class
labels it was fitted on, strings included) and ``predict_proba``; any other loss
serves ``predict`` (the raw value, as ``CatBoostRegressor.predict``). Like the
XGBoost runtime, the model is told how many threads to use (CatBoost's own
default is every core, whichever worker it runs in) and a file saved by
another CatBoost version loads with a warning naming both versions.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from servekit.errors import ModelLoadError
from servekit.runtimes.catboost_face import CatBoostModel, face
from servekit.runtimes.sklearn import PICKLE_SUFFIXES, SKLearnRuntime

__all__ = ["CATBOOST_SUFFIXES", "CatBoostModel", "CatBoostRuntime", "face"]

# MLServer's runtime looks for model.cbm, then model.bin
CATBOOST_SUFFIXES = (".cbm", ".bin")


class CatBoostRuntime(SKLearnRuntime):
    platform: ClassVar[str] = "catboost"
    model_suffixes: ClassVar[tuple[str, ...]] = (*CATBOOST_SUFFIXES, *PICKLE_SUFFIXES)

    def load_model(self, path: Path) -> None:
        if path.suffix in PICKLE_SUFFIXES:
            super().load_model(path)  # adopt() wraps the CatBoost object it finds
            return
        import catboost

        model = catboost.CatBoost()
        try:
            model.load_model(str(path), format="cbm")
        except catboost.CatBoostError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise ModelLoadError(f"cannot load {path.name} as a CatBoost model (.cbm): {detail}") from exc
        self.adopt(model)  # SKLearnRuntime.adopt gives it its face (catboost_face.face)
