"""TorchServe's Postman collections (management and inference) run with newman
against ``servekit`` in TorchServe mode; writes
``conformance/results/torchserve-postman-management.json`` and
``…-inference.json`` (the contract is in ``conformance/run.py``).

What is vendored (``vendor/``, Apache-2.0, TorchServe's LICENSE beside it, 76 KB):
the two collections, their data files and environment from
``pytorch/serve`` at the commit in ``vendor/COMMIT``, and the 272-byte MNIST
digit the inference data posts. Set up here, from the registries only:
newman (npm, pinned), and the archives, built offline by ``make_models.py``
with torch-model-archiver. Run as TorchServe's CI runs them
(``ts_scripts/api_utils.py``): one server per collection, a fresh model
store, ``disable_token_authorization=true``. Only addresses are changed:
the environment's host and ports, the data files' archive host
(``https://torchserve.pytorch.org``, ``https://torchserve.s3.amazonaws.com``
→ a local HTTP server on 127.0.0.1 holding the archives), and the metrics
URL the inference collection writes as ``http://localhost:8082/metrics``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
VENDOR = HERE / "vendor"
RESULTS = HERE.parent / "results"
SERVEKIT = Path(sys.executable).parent / "servekit"
NEWMAN_VERSION = "6.2.2"
NEWMAN = WORK / "node_modules" / ".bin" / "newman"
TORCHSERVE_COMMIT = (VENDOR / "COMMIT").read_text().strip()
REMOTE_HOSTS = ("https://torchserve.pytorch.org", "https://torchserve.s3.amazonaws.com")

PRETRAINED = "the expected top-5 ImageNet classes of the kitten need the pretrained weights (a download)"
BERT = "needs HuggingFace transformers and pretrained BERT weights (a download)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install_newman() -> str | None:
    if NEWMAN.exists():
        return None
    WORK.mkdir(exist_ok=True)
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(WORK),
                           f"newman@{NEWMAN_VERSION}"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not NEWMAN.exists():
        return f"npm install newman@{NEWMAN_VERSION} failed (is the npm registry reachable?): {done.stderr[-400:]}"
    return None


def build_models() -> None:
    digest = hashlib.sha256((HERE / "make_models.py").read_bytes()).hexdigest()
    mark = WORK / "build" / ".built"
    if mark.exists() and mark.read_text() == digest:
        return
    for folder in ("store", "remote", "build"):
        shutil.rmtree(WORK / folder, ignore_errors=True)
    subprocess.run([sys.executable, str(HERE / "make_models.py"), str(WORK / "store"),
                    str(WORK / "remote" / "mar_files"), str(WORK / "build")], check=True)
    mark.write_text(digest)


def test_files() -> None:
    """The files the inference data posts (``../examples/…`` from newman's folder):
    pictures made here, the vendored digit, a line of text."""
    import numpy as np
    from PIL import Image

    examples = WORK / "examples"
    rng = np.random.default_rng(0)
    for path, size in (("image_classifier/kitten.jpg", (320, 240)), ("object_detector/persons.jpg", (480, 320)),
                       ("image_segmenter/persons.jpg", (480, 320))):
        target = examples / path
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR).save(target, quality=90)
    digit = examples / "image_classifier/mnist/test_data/0.png"
    digit.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(VENDOR / "0.png", digit)
    for path in ("Huggingface_Transformers/sample_text.txt", "text_classification/sample_text.txt"):
        (examples / path).parent.mkdir(parents=True, exist_ok=True)
        (examples / path).write_text("Bloomberg has decided to publish a new report on global economic situation.")


def serve_remote() -> tuple[str, http.server.ThreadingHTTPServer]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(WORK / "remote")))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


class Server:
    """servekit in TorchServe mode with a fresh model store (hard links to the built archives)."""

    def __init__(self, name: str, remote: str) -> None:
        self.folder = WORK / f"run-{name}"
        shutil.rmtree(self.folder, ignore_errors=True)
        store = self.folder / "model_store"
        store.mkdir(parents=True)
        for archive in (WORK / "store").glob("*.mar"):
            os.link(archive, store / archive.name)
        self.ports = {"pred-port": free_port(), "mgmt-port": free_port(), "metric-port": free_port()}
        (self.folder / "config.properties").write_text(
            f"inference_address=http://127.0.0.1:{self.ports['pred-port']}\n"
            f"management_address=http://127.0.0.1:{self.ports['mgmt-port']}\n"
            f"metrics_address=http://127.0.0.1:{self.ports['metric-port']}\n"
            "disable_token_authorization=true\n"
            "enable_model_api=true\n"
            "metrics_mode=prometheus\n"
            # TorchServe allows every URL by default; servekit none: allow the archives' stand-in host
            f"allowed_urls={remote.replace('.', '[.]')}/.*\n"
        )
        self.log = (self.folder / "servekit.log").open("wb")
        self.process = subprocess.Popen(
            [str(SERVEKIT), "serve", "--model-store", str(store), "--ts-config", "config.properties", "--ncs"],
            cwd=self.folder, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.ports['mgmt-port']}/models", timeout=5).read()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"servekit did not start; see {self.folder / 'servekit.log'}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def run_collection(kind: str, remote: str) -> dict[str, Any]:
    collection = json.loads((VENDOR / f"{kind}_api_test_collection.json").read_text())
    data_text = (VENDOR / f"{kind}_data.json").read_text()
    for host in REMOTE_HOSTS:
        data_text = data_text.replace(host, remote)
    rows = json.loads(data_text)
    server = Server(kind, remote)
    try:
        environment = json.loads((VENDOR / "environment.json").read_text())
        for value in environment["values"]:
            if value["key"] == "hostname":
                value["value"] = "127.0.0.1"
            elif value["key"] in server.ports:
                value["value"] = str(server.ports[value["key"]])
        for item in collection["item"]:
            url = item["request"]["url"]
            if isinstance(url, dict) and url.get("raw", "").startswith("http://localhost:8082"):
                item["request"]["url"] = url["raw"].replace(
                    "http://localhost:8082", f"http://127.0.0.1:{server.ports['metric-port']}")
        files = {"collection": collection, "environment": environment, "data": rows}
        for name, content in files.items():
            (server.folder / f"{name}.json").write_text(json.dumps(content, indent=1))
        report = server.folder / "report.json"
        newman = subprocess.run(
            [str(NEWMAN), "run", str(server.folder / "collection.json"), "-e", str(server.folder / "environment.json"),
             "-d", str(server.folder / "data.json"),
             "-r", "cli,json", "--reporter-json-export", str(report), "--timeout-request", "300000",
             "--working-dir", str(WORK / "run-files")],
            cwd=WORK / "run-files", capture_output=True, text=True,
        )
        (server.folder / "newman.txt").write_text(newman.stdout + newman.stderr)
    finally:
        server.stop()
    return summarise(kind, json.loads(report.read_text()), rows)


def summarise(kind: str, report: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    passed = total = 0
    failed: list[str] = []
    skipped: list[dict[str, str]] = []
    for execution in report["run"]["executions"]:
        iteration = execution["cursor"]["iteration"]
        row = rows[iteration]
        label = f"#{iteration + 1} {row.get('test') or row.get('model_name')} / {execution['item']['name']}"
        for assertion in execution.get("assertions") or []:
            name = f"{label} / {assertion['assertion']}"
            reason = skip_reason(row, execution["item"]["name"], assertion["assertion"])
            if reason:
                state = "failed" if assertion.get("error") else "passed"
                skipped.append({"test": name, "reason": f"{reason} ({state} here)"})
                continue
            total += 1
            if assertion.get("error"):
                failed.append(f"{name}: {assertion['error'].get('message', '')[:200]}")
            else:
                passed += 1
    stats = report["run"]["stats"]["assertions"]
    return {
        "suite": f"TorchServe Postman collection, {kind} (newman {NEWMAN_VERSION})",
        "peer_version": f"pytorch/serve@{TORCHSERVE_COMMIT[:12]}",
        "passed": passed, "total": total, "peer_passed": None, "peer_total": None,
        "skipped": skipped, "stricter": [], "failed": failed,
        "notes": (
            f"test/postman/{kind}_api_test_collection.json with {kind}_data.json ({len(rows)} iterations), "
            f"newman {NEWMAN_VERSION}; newman counted {stats['total']} assertions, {stats['failed']} failed. "
            "Archives built offline by conformance/torchserve-postman/make_models.py (same names, handlers and "
            "input/output shapes as TorchServe's CI archives; small random-weight members of the same "
            "torchvision families). Changed: the environment's host and ports, the data file's archive host "
            "(torchserve.pytorch.org / torchserve.s3.amazonaws.com → a local HTTP server on 127.0.0.1, "
            "which allowed_urls admits: servekit allows no URL by default where TorchServe allows all), "
            "and the inference collection's metrics URL (localhost:8082 → the run's metrics port)."
        ),
    }


def skip_reason(row: dict[str, Any], item: str, assertion: str) -> str | None:
    if "bert" in str(row.get("model_name", "")):
        return BERT
    if row.get("validator") == "image_classification" and assertion == "Test expected JSON response":
        return PRETRAINED
    return None


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    problem = install_newman()
    if problem:
        print(problem, file=sys.stderr)
        for kind in ("management", "inference"):
            (RESULTS / f"torchserve-postman-{kind}.json").write_text(json.dumps({
                "suite": f"TorchServe Postman collection, {kind}", "peer_version": TORCHSERVE_COMMIT[:12],
                "passed": None, "total": None, "peer_passed": None, "peer_total": None,
                "skipped": [], "stricter": [], "failed": [], "notes": problem}, indent=1))
        return 1
    build_models()
    test_files()
    (WORK / "run-files").mkdir(exist_ok=True)
    remote, httpd = serve_remote()
    try:
        for kind in sys.argv[1:] or ["management", "inference"]:
            result = run_collection(kind, remote)
            (RESULTS / f"torchserve-postman-{kind}.json").write_text(json.dumps(result, indent=1) + "\n")
            print(f"{kind}: {result['passed']}/{result['total']} ({len(result['skipped'])} skipped)")
    finally:
        httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
