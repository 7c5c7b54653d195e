"""``make conformance``: the peers' own test suites and clients run against
servekit, and one table of the results.

Each suite lives in ``conformance/<suite>/`` with an executable ``run`` (any
language) that sets itself up from the package registries only (pinned
versions; nothing fetched at test time beyond installing packages), starts
what it needs on free 127.0.0.1 ports, runs the peer's suite unchanged but for
the server's command, and writes ``conformance/results/<suite>.json``::

    {
      "suite": "TF Serving tensorflow_model_server_test.py",   # what the peer wrote
      "peer_version": "2.19.0",                                 # pinned
      "passed": 27, "total": 30,                                # against servekit
      "peer_passed": null, "peer_total": null,                  # the peer itself, same run, when it installs here
      "skipped": [{"test": "testTFLite…", "reason": "TFLite"}],
      "stricter": [{"test": "…", "reason": "servekit refuses URLs outside allowed_urls"}],
      "failed": ["names of failing tests"],
      "notes": "how it was run"
    }

This script runs every suite (or those named on the command line), then writes
``benchmarks/results/conformance.md`` from every result file present.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TABLE = HERE.parent / "benchmarks" / "results" / "conformance.md"


def suites() -> list[Path]:
    return sorted(p.parent for p in HERE.glob("*/run") if p.is_file())


def run(names: list[str]) -> int:
    failures = 0
    for folder in suites():
        if names and folder.name not in names:
            continue
        started = time.monotonic()
        print(f"== {folder.name}", flush=True)
        code = subprocess.call([str(folder / "run")], cwd=folder)
        print(f"== {folder.name}: exit {code} in {time.monotonic() - started:.0f} s", flush=True)
        failures += code != 0
    return failures


def cell(passed: object, total: object) -> str:
    return "–" if passed is None or total is None else f"{passed}/{total}"


def table() -> str:
    rows = []
    details = []
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        rows.append(
            f"| {result['suite']} {result.get('peer_version', '')} | {cell(result.get('passed'), result.get('total'))} "
            f"| {cell(result.get('peer_passed'), result.get('peer_total'))} |"
        )
        lines = [f"### {result['suite']}", "", result.get("notes", "")]
        for title, key in (("Skipped", "skipped"), ("Stricter on purpose", "stricter")):
            entries = result.get(key) or []
            if entries:
                lines += ["", f"{title}:", ""] + [f"- `{e['test']}`: {e['reason']}" for e in entries]
        failed = result.get("failed") or []
        if failed:
            lines += ["", "Failing:", ""] + [f"- `{name}`" for name in failed]
        details.append("\n".join(lines))
    head = [
        "# Conformance: the peers' own suites and clients against servekit",
        "",
        "Written by `make conformance` (`conformance/run.py`); each suite is pinned to the version shown.",
        "",
        "| suite or client (written by the peer) | servekit | the peer itself, same run |",
        "|---|---|---|",
    ]
    return "\n".join(head + rows) + "\n\n" + "\n\n".join(details) + "\n"


def main() -> int:
    failures = run(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(table())
    print(TABLE.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
