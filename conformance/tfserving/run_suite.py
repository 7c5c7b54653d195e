"""TF Serving's own integration test against servekit.

``vendor/`` holds TF Serving's ``tensorflow_model_server_test.py`` and its
``test_util`` helper, unchanged, with the test SavedModels and config files
they read (tag 2.20.0, Apache-2.0). The test starts
``$TEST_SRCDIR/tf_serving/tensorflow_serving/model_servers/tensorflow_model_server``
with TF Serving's flags; here that path is a two-line wrapper that execs
``servekit`` with the same arguments. Nothing is downloaded: the test runs in
servekit's virtualenv, which has TensorFlow and ``tensorflow-serving-api``.

Writes ``conformance/results/tfserving.json`` (see ``conformance/run.py``).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENDOR = HERE / "vendor"
WORK = HERE / ".work"
RESULT = HERE.parent / "results" / "tfserving.json"
PEER_VERSION = "2.20.0"
TEST_FILE = VENDOR / "tensorflow_serving" / "model_servers" / "tensorflow_model_server_test.py"
TEST_CLASS = "TensorflowModelServerTest"
TIMEOUT_SECONDS = 40 * 60

SKIPPED = {
    "testPredictOnTfLite": "TFLite: servekit does not run .tflite models (--prefer_tflite_model)",
    "testPredictWithSignatureDefOnTfLite": "TFLite: servekit does not run .tflite models",
    "testMultiInference": "MultiInference: servekit does not serve PredictionService.MultiInference",
    "testMultiInferenceTf2": "MultiInference: servekit does not serve PredictionService.MultiInference",
    "test_profiler_service_with_valid_trace_request": "profiler: servekit has no TensorFlow profiler service",
    "test_tf_text": "TF Text: its tf_text_regression SavedModel is large (not vendored) and needs "
                    "tensorflow-text's custom ops",
}

WRAPPER = """#!/bin/sh
# tensorflow_model_server for TF Serving's test: servekit with the same arguments
# (in its own environment, without the test's tf-keras)
exec env -u PYTHONPATH -u TF_USE_LEGACY_KERAS {servekit} "$@"
"""
# The test builds Keras models with tf.keras and expects Keras 2's SavedModel
# signatures (input "x", output "y"); TensorFlow 2.21's tf.keras is Keras 3
# (signatures "inputs" -> "output_0") unless tf-keras is installed and
# TF_USE_LEGACY_KERAS=1, as TF Serving's own builds have it. Installed for the
# test process only, into .work/site, from the package registry.
TF_KERAS = "tf-keras==2.21.0"

# tensorflow_serving is a regular package of tensorflow-serving-api (only
# ``apis``); this one adds the vendored model_servers.test_util beside it
PACKAGE_SHIM = """import os, sysconfig
__path__.append(os.path.join(sysconfig.get_paths()["purelib"], "tensorflow_serving"))
"""


def test_names() -> list[str]:
    tree = ast.parse(TEST_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == TEST_CLASS:
            return [f.name for f in node.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test")]
    raise SystemExit(f"{TEST_FILE}: no class {TEST_CLASS}")


def prepare() -> dict[str, str]:
    shutil.rmtree(WORK, ignore_errors=True)
    srcdir = WORK / "srcdir"
    package = srcdir / "tf_serving" / "tensorflow_serving"
    (package / "model_servers").mkdir(parents=True)
    binary = package / "model_servers" / "tensorflow_model_server"
    binary.write_text(WRAPPER.format(servekit=ROOT / ".venv" / "bin" / "servekit"))
    binary.chmod(0o755)
    (package / "servables").symlink_to(VENDOR / "tensorflow_serving" / "servables")

    site = WORK / "site" / "tensorflow_serving"
    (site / "model_servers" / "test_util").mkdir(parents=True)
    (site / "__init__.py").write_text(PACKAGE_SHIM)
    (site / "model_servers" / "__init__.py").write_text("")
    (site / "model_servers" / "test_util" / "__init__.py").write_text("")
    base = "tensorflow_model_server_test_base.py"
    (site / "model_servers" / "test_util" / base).symlink_to(
        VENDOR / "tensorflow_serving" / "model_servers" / "test_util" / base
    )
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(WORK / "site"), TF_KERAS], check=True)
    tmp = WORK / "tmp"
    tmp.mkdir()
    env = {
        **os.environ,
        "TEST_SRCDIR": str(srcdir),
        "TEST_TMPDIR": str(tmp) + "/",
        "XML_OUTPUT_FILE": str(WORK / "results.xml"),
        "PYTHONPATH": str(WORK / "site"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_USE_LEGACY_KERAS": "1",
    }
    return env


def run_tests(names: list[str], env: dict[str, str]) -> tuple[int, str]:
    log = WORK / "test.log"
    command = [sys.executable, str(TEST_FILE)]
    env = {**env, "TESTBRIDGE_TEST_ONLY": " ".join(f"{TEST_CLASS}.{n}" for n in names)}
    print("running:", " ".join(command), f"({len(names)} tests)", flush=True)
    with log.open("w") as out:
        # its own session: the servers the test starts (it kills them only at its
        # exit) are stopped with it
        proc = subprocess.Popen(command, env=env, cwd=WORK, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            code = -1
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return code, log.read_text()


def outcomes(names: list[str], log: str) -> dict[str, str]:
    """test name -> passed / failed, from the XML report (else the -v log)."""
    out: dict[str, str] = {}
    report = WORK / "results.xml"
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            bad = case.find("failure") is not None or case.find("error") is not None
            out[case.get("name", "")] = "failed" if bad else "passed"
    for name in names:
        if name in out:
            continue
        line = next((li for li in log.splitlines() if li.startswith(f"{name} (")), "")
        out[name] = "passed" if line.rstrip().endswith("... ok") else "failed"
    return out


def main() -> int:
    names = test_names()
    runnable = [n for n in names if n not in SKIPPED]
    only = sys.argv[1:]  # a few tests by name, to try them: no result file then
    if only:
        runnable = [n for n in runnable if n in only]
    env = prepare()
    started = time.monotonic()
    code, log = run_tests(runnable, env)
    seconds = time.monotonic() - started
    results = outcomes(runnable, log)
    failed = sorted(n for n in runnable if results.get(n) != "passed")
    passed = len(runnable) - len(failed)
    print(log[-6000:])
    summary = {
        "suite": "TF Serving tensorflow_model_server_test.py",
        "peer_version": PEER_VERSION,
        "passed": passed,
        "total": len(names),
        "peer_passed": None,
        "peer_total": None,
        "skipped": [{"test": n, "reason": SKIPPED[n]} for n in names if n in SKIPPED],
        "stricter": [],
        "failed": failed,
        "notes": (
            f"TF Serving {PEER_VERSION}'s own tensorflow_model_server_test.py and test_util helper, "
            "with its test SavedModels and config files, vendored unchanged (Apache-2.0, about 125 KB); "
            "its flags as written; the tensorflow_model_server it starts is a wrapper that execs "
            f"servekit with the same arguments. The test process uses {TF_KERAS} (TF_USE_LEGACY_KERAS=1) "
            f"so that tf.keras saves the Keras 2 signatures the test expects. {passed}/{len(runnable)} of the tests "
            "that do not need "
            f"TFLite, MultiInference, the profiler or TF Text passed in {seconds:.0f} s "
            f"(unittest exit {code}). TF Serving itself does not install from the package "
            "registries here (tensorflow-model-server is a binary), so there is no peer column."
        ),
    }
    if only:
        print(f"{passed}/{len(runnable)} passed, failed: {failed}")
        return 0 if not failed else 1
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"TF Serving: {passed}/{len(names)} passed, {len(SKIPPED)} skipped, failed: {failed}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
