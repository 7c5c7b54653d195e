"""The Markdown report (``results/torchserve.md``) from the comparison's raw results."""

# ruff: noqa: RUF001  (the multiplication sign is meant: Markdown for people)

from __future__ import annotations

import time
from typing import Any

from report import num, ratio, table, times

CONNECTIONS = ["1", "16"]


def render(results: dict[str, Any]) -> str:
    r = Report(results)
    parts = [r.header(), r.targets(), r.throughput(), r.memory(), r.problems()]
    return "\n".join(p for p in parts if p) + "\n"


class Report:
    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.configs: dict[str, Any] = results["configs"]

    def cell(self, config: str, connections: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.configs.get(config, {}).get("wrk", {}).get(connections)
        return found

    def value(self, config: str, connections: str, key: str) -> float | None:
        cell = self.cell(config, connections)
        return None if cell is None else float(cell[key])

    def memory_mb(self, config: str) -> tuple[float | None, str]:
        after = self.configs.get(config, {}).get("memory_after") or {}
        if after.get("pss_mb"):
            return float(after["pss_mb"]), "PSS"
        return (float(after["rss_mb"]) if after.get("rss_mb") else None), "RSS"

    def header(self) -> str:
        m = self.results["machine"]
        f = self.results["floor"]
        load = ", ".join(f"{v:.1f}" for v in m["load_average_at_start"])
        partial = ""
        if set(self.configs) - set(self.results.get("measured_now", self.configs)):
            when = ", ".join(f"{n} {c.get('measured_at', '?')}" for n, c in self.configs.items())
            partial = f"\n**Partial re-run**: configurations were measured at different times ({when}).\n"
        return (
            "# servekit vs TorchServe — the article's CNN\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime())} · {self.results['mode']} run "
            f"(wrk {self.results['wrk_seconds']:g} s per point) · took {self.results.get('elapsed_s', 0) / 60:.1f} "
            "min · `make bench-torchserve`\n\n"
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, Linux {m['kernel']}, "
            f"Python {m['python']}; load average at start {load}. The machine is shared and noisy: read "
            "ratios from one run, not absolute numbers across runs.\n\n"
            f"One archive for both: the article's small CNN (two conv blocks, 28×28 grayscale), trained one "
            f"epoch on synthetic images, with its custom handler (`from ts.torch_handler.base_handler import "
            f"BaseHandler`), archived by torch-model-archiver {m['torch_model_archiver']}. "
            f"TorchServe {m['torchserve']} (torch {m['torchserve_torch']}, {m['java']}) with its defaults: "
            "one worker per core, batch size 1, token auth off. servekit "
            f"{m['servekit_commit']} (torch {m['servekit_torch']}) with its TorchServe-mode defaults "
            f"(`servekit serve --model-store … --models fmnist=fashion_mnist.mar`: one worker process per "
            f"core{self.servekit_workers()}). Load: "
            f"{m['wrk']} posting the {f['png_bytes']}-byte PNG as the raw body with no Content-Type "
            "(`curl -T`), on the same 2 cores as the servers.\n\n"
            f"Floors, in process: the model takes {num(f['model_1_s'] * 1e3, 3)} ms for 1 image and "
            f"{num(f['model_64_s'] * 1e3, 2)} ms for 64 ({f['threads']} torch threads); the article's handler "
            f"(PNG decode, preprocess, model, label) takes {num(f['handler_1_s'] * 1e3, 3)} ms per request.\n\n"
            "Ratios are servekit / TorchServe: for req/s higher is better; for latency and memory lower "
            "is better.\n" + partial
        )

    def servekit_workers(self) -> str:
        workers = self.configs.get("servekit", {}).get("workers")
        return f", {workers} here" if workers else ""

    def targets(self) -> str:
        rows: list[list[str]] = []

        def add(what: str, sk: float | None, ts: float | None, unit: str, goal: str, ok: Any) -> None:
            value = ratio(sk, ts)
            met = "–" if value is None else ("yes" if ok(value) else "**no**")
            rows.append([what, f"{num(sk)} {unit}", f"{num(ts)} {unit}", times(value), goal, met])

        add("throughput, 16 conns", self.value("servekit", "16", "rps"), self.value("torchserve", "16", "rps"),
            "req/s", "≥ 10×", lambda v: v >= 10)
        add("p99, 16 conns", self.value("servekit", "16", "p99_ms"), self.value("torchserve", "16", "p99_ms"),
            "ms", "< 1×", lambda v: v < 1)
        add("p50, 1 conn", self.value("servekit", "1", "p50_ms"), self.value("torchserve", "1", "p50_ms"),
            "ms", "≤ 1×", lambda v: v <= 1)
        sk, kind = self.memory_mb("servekit")
        ts, ts_kind = self.memory_mb("torchserve")
        add(f"memory of the process tree after load ({kind})", sk, ts if kind == ts_kind else None, "MB",
            "≤ 0.5×", lambda v: v <= 0.5)
        return "## Targets of issue 5\n\n" + table(["measure", "servekit", "TorchServe", "ratio", "goal", "met"], rows)

    def throughput(self) -> str:
        rows = []
        for name in self.configs:
            for c in CONNECTIONS:
                cell = self.cell(name, c)
                if cell is None:
                    continue
                rows.append([name, c, num(cell["rps"]), num(cell["p50_ms"], 2), num(cell["p90_ms"], 2),
                             num(cell["p99_ms"], 2), num(cell["max_ms"], 1),
                             times(ratio(cell["rps"], self.value("torchserve", c, "rps"))),
                             times(ratio(cell["p50_ms"], self.value("torchserve", c, "p50_ms"))),
                             times(ratio(cell["p99_ms"], self.value("torchserve", c, "p99_ms"))),
                             str(cell["errors"])])
        floor = self.results["floor"]
        measured = [f"`{name}` median {num(c['worker_prediction_ms']['p50'], 2)} ms, p90 "
                    f"{num(c['worker_prediction_ms']['p90'], 2)} ms ({c['worker_prediction_ms']['count']:,} requests)"
                    for name, c in self.configs.items() if c.get("worker_prediction_ms")]
        where = ""
        if measured:
            where = ("Where TorchServe's time goes: its own `PredictionTime` metric (the handler in its Python "
                     f"worker, JVM excluded): {'; '.join(measured)}; the same handler takes "
                     f"{num(floor['handler_1_s'] * 1e3, 3)} ms in process. By default each worker runs torch "
                     "with one thread per core, so on 2 cores the workers' thread teams, the JVM and the load "
                     "generator wait on each other.\n\n")
        return ("## Throughput and latency (wrk, one PNG per request)\n\n"
                "For reference, not the targets (which compare both servers' defaults): "
                "`torchserve-1-thread` is TorchServe tuned with `OMP_NUM_THREADS=1` (one torch thread "
                "per worker), and `servekit-1-worker` is `--parallel-workers 1` (one server process, the "
                "default of TorchServe mode before it ran one per core).\n\n" + where
                + table(["server", "conns", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "ratio req/s",
                         "ratio p50", "ratio p99", "errors"], rows))

    def memory(self) -> str:
        rows = []
        for name, config in self.configs.items():
            idle, after = config.get("memory_idle") or {}, config.get("memory_after") or {}
            rows.append([name, str(after.get("processes", idle.get("processes", "–"))),
                         num(idle.get("rss_mb"), 0), num(idle.get("pss_mb"), 0),
                         num(after.get("rss_mb"), 0), num(after.get("pss_mb"), 0), num(config.get("ready_s"), 2)])
        return ("## Memory and start-up\n\nWhole process tree: for TorchServe the `torchserve` launcher, the "
                "JVM and its Python workers; for servekit the server and any workers. PSS shares pages "
                "between processes fairly; RSS counts shared pages once per process. Time to ready is "
                "until the first correct prediction (TorchServe's `/ping` says Healthy before its workers "
                "have loaded the model).\n\n"
                + table(["server", "processes", "RSS MB idle", "PSS MB idle", "RSS MB after load",
                         "PSS MB after load", "time to ready s"], rows))

    def problems(self) -> str:
        lines = []
        for name, config in self.configs.items():
            if config.get("failure"):
                lines.append(f"- **{name} failed**: {config['failure'].splitlines()[0]}")
            expected = self.results["floor"].get("expected_label")
            if config.get("wrk") and config.get("answer_after") != expected:
                lines.append(f"- {name} answered {config.get('answer_after')!r} after the load, not {expected!r}")
            for c, cell in config.get("wrk", {}).items():
                if cell["errors"]:
                    lines.append(f"- {name} c={c}: {cell['errors']} errors of {cell['requests']} requests "
                                 f"{cell['error_kinds']}")
        if not lines:
            return ("## Errors\n\nNone: every request of every run got a 2xx answer, and each server still "
                    "answered the right label after the load.\n")
        return "## Errors and anomalies\n\n" + "\n".join(lines) + "\n"
