"""The Markdown report (``results/latest.md``) from the suite's raw results."""

# ruff: noqa: RUF001  (the multiplication sign and en dash are meant: Markdown for people)

from __future__ import annotations

import time
from typing import Any

MODELS = ["iris-rf", "fashion-logreg", "fashion-xgboost"]
CONNECTIONS = ["1", "16", "64"]
MLSERVER_WORKER_SETTINGS = ["mlserver", "mlserver-pw0", "mlserver-pw2"]
OPEN_MODELS = ["iris-rf", "fashion-logreg"]
OPEN_BOUNDS = ["10", "100"]
TRANSPORTS = ["json", "binary", "grpc"]
LARGE_PEERS = ["pytriton", "kserve", "mlserver"]
# issue 13's starting point: the run it quotes (2c4c878, 2026-11-21), LogisticRegression at 16 connections:
# 14,223 req/s on 1.83 cores of server CPU
ISSUE13_CPU_MS = 1.83 / 14223 * 1000  # the configurations the large part measures beside servekit
# and XGBoost at 16 connections in that run, beside the bare app on servekit's HTTP server (8 %)
ISSUE13_XGBOOST_RPS = 5976.9
ISSUE13_BARE_RPS = 70368.2


def render(results: dict[str, Any]) -> str:
    r = Results(results)
    parts = [r.header(), r.side_by_side(), r.open_loop(), r.large(), r.against_committed(), r.environments(),
             r.targets13(), r.targets(), r.throughput(), r.bench(), r.big(), r.memory(), r.noise(), r.problems()]
    return "\n".join(p for p in parts if p) + "\n"


def num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def get(cell: dict[str, Any] | None, key: str) -> float | None:
    return None if cell is None else cell.get(key)


def cpu_ms_per_request(cell: dict[str, Any]) -> float | None:
    """Server CPU milliseconds per answered request; rows from before it was recorded get it from
    the mean cores the server used over its req/s."""
    if cell.get("cpu_ms_per_request") is not None:
        return float(cell["cpu_ms_per_request"])
    if cell.get("server_cpu") is not None and cell.get("rps"):
        return float(cell["server_cpu"]) / float(cell["rps"]) * 1000
    return None


def first_and_last(text: str) -> str:
    """A failure's first line and, when it ends with a log, the log's last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} … {lines[-1][:200]}"


def setting(name: str, config: dict[str, Any]) -> str:
    if config.get("setting"):
        return str(config["setting"])
    if name.startswith("servekit"):
        workers = config.get("parallel_workers")
        return "defaults (adaptive batching)" + (f", {workers} worker(s)" if workers else "")
    if name == "mlserver-batch":
        return "adaptive batching 32 / 5 ms (iris-rf)"
    workers = config.get("parallel_workers")
    return "defaults" if workers is None else f"parallel_workers {workers}"


def times(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}×" if value < 0.1 else f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class Results:
    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.configs: dict[str, Any] = results["configs"]

    def wrk(self, config: str, model: str, connections: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.configs.get(config, {}).get("wrk", {}).get(model, {}).get(connections)
        return found

    def rps(self, config: str, model: str, connections: str) -> float | None:
        cell = self.wrk(config, model, connections)
        return None if cell is None else float(cell["rps"])

    def big_seconds(self, config: str, protocol: str) -> float | None:
        """Median seconds of one 10,000-row request, one at a time (the large part's one
        connection; runs from before it: ``servekit bench --requests``)."""
        cell = ((self.configs.get(config, {}).get("large") or {}).get(protocol) or {}).get("1")
        if cell is not None:
            return None if cell.get("errors") or cell.get("p50_ms") is None else float(cell["p50_ms"]) / 1000
        report = self.configs.get(config, {}).get("big", {}).get(protocol, {})
        levels = report.get("results") or []
        if not levels or levels[0]["p50_ms"] is None or levels[0]["errors"]:
            return None
        return float(levels[0]["p50_ms"]) / 1000

    def best_mlserver(self, model: str, connections: str) -> tuple[float | None, str]:
        best: tuple[float | None, str] = (None, "")
        for name in MLSERVER_WORKER_SETTINGS:
            value = self.rps(name, model, connections)
            if value is not None and (best[0] is None or value > best[0]):
                best = (value, name)
        return best

    def header(self) -> str:
        m = self.results["machine"]
        load = ", ".join(f"{v:.1f}" for v in m["load_average_at_start"])
        return (
            "# servekit vs MLServer and the peers — latest run\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime())} · {self.results['mode']} run "
            f"(wrk {self.results['wrk_seconds']:g} s per point, `servekit bench` {self.results['bench_seconds']:g} s) "
            f"· took {self.results.get('elapsed_s', 0) / 60:.1f} min · `benchmarks/run.sh`"
            + self.parts_line() + "\n\n"
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, Linux {m['kernel']}, "
            f"Python {m['python']}; load average at start {load}. The machine is shared and noisy: runs of "
            "one setup can differ by tens of percent, so read ratios from one run, not absolute numbers "
            "across runs.\n\n"
            f"servekit {m['servekit_commit']} with its defaults (one worker per core, adaptive batching on) · "
            f"MLServer/uvloop {m.get('mlserver', '?')} · {m['wrk']}. Clients run on the same 2 cores as the "
            "servers.\n\n"
            "Ratios are servekit / MLServer: for req/s higher is better; for latency, seconds and memory "
            "lower is better.\n" + self.mixed_runs()
        )

    def parts_line(self) -> str:
        parts = self.results.get("parts")
        if not parts:
            return ""
        text = f" · parts measured: {', '.join(parts)}"
        if "open" in parts and self.results.get("open_seconds"):
            text += f" (open loop {self.results['open_seconds']:g} s per rate"
            text += f", large requests {self.results['large_seconds']:g} s per point)" if "large" in parts else ")"
        elif "large" in parts and self.results.get("large_seconds"):
            text += f" (large requests {self.results['large_seconds']:g} s per point)"
        if len(parts) < 3:
            text += "; the other parts' numbers come from earlier runs"
        return text

    def side_by_side(self) -> str:
        """One table for every server: the same wrk load, one row per configuration."""
        rows = []
        servers = [(name, c) for name, c in self.configs.items()
                   if c.get("wrk") and not str(c.get("kind", "")).startswith("bare")]
        for model in MODELS:
            for c in ("16", "64"):
                cells = [(name, config, self.wrk(name, model, c)) for name, config in servers]
                found = sorted(((n, cfg, cell) for n, cfg, cell in cells if cell is not None),
                               key=lambda x: -float(x[2]["rps"]))
                sk = self.rps("servekit", model, c)
                for name, config, cell in found:
                    memory = config.get("memory_after") or {}
                    rows.append([model, c, name, setting(name, config), num(cell["rps"]), num(cell["p50_ms"], 2),
                                 num(cell["p99_ms"], 2), num(cpu_ms_per_request(cell), 3),
                                 num(memory.get("pss_mb"), 0), num(config.get("ready_s"), 1),
                                 times(ratio(sk, cell["rps"]))])
        if not rows:
            return ""
        left_out = [f"- {name}: **skipped**, {c['skipped']}" for name, c in self.configs.items() if c.get("skipped")]
        left_out += [f"- {name}: **failed**, {first_and_last(c['failure'])}" for name, c in self.configs.items()
                     if c.get("failure")]
        return ("## Every server side by side (wrk, one row per request)\n\n"
                "The same wrk load on each configuration (one-row requests, each server's own request "
                "format: V2 JSON where it has V2, KServe V1 `instances`, else the peer's own JSON with the "
                "rows as nested lists), after a check that each model's answer for the test row equals "
                "scikit-learn's (XGBoost's) own `predict`. Fastest first within each load. CPU per request: "
                "CPU seconds of the server's whole process tree during the run over the requests answered. "
                "PSS: the whole tree after the load. Ready: seconds from start until every model answers "
                "ready. Last column: servekit's req/s over the row's (same model and load).\n\n"
                + table(["model", "conns", "server", "setting", "req/s", "p50 ms", "p99 ms", "CPU ms/req",
                         "PSS MB", "ready s", "servekit ÷ row"], rows)
                + ("\n" + "\n".join(left_out) + "\n" if left_out else ""))

    def open_loop(self) -> str:
        """Open loop: each server's highest sustained rate under p99 10 ms and 100 ms, and its tail
        at 50 % and 90 % of that rate; then servekit over the best peer."""
        rows = []
        for model in OPEN_MODELS:
            found = [(name, config, config["open"][model]) for name, config in self.configs.items()
                     if (config.get("open") or {}).get(model)]
            found.sort(key=lambda x: -float((x[2].get("10") or {}).get("rate") or 0))
            for name, config, cell in found:
                row = [name, setting(name, config), model]
                for bound in OPEN_BOUNDS:
                    entry = cell.get(bound) or {}
                    rate = entry.get("rate")
                    row.append(num(rate, 0) if rate is not None else
                               ("error" if entry.get("error") else f"< {num(entry.get('start_rate'), 0)}"))
                    for key in ("at_50", "at_90"):
                        at = entry.get(key) or {}
                        row.append("–" if not at else f"{num(at.get('p99_ms'), 2)} / {num(at.get('p999_ms'), 2)}")
                row.append(num(cell.get("client_cpu_max"), 2))
                rows.append(row)
        if not rows:
            return ""
        ratios = []
        for entry in self.open_summary():
            sk, peer_rate, peer = entry["servekit"], entry["best_peer_rate"], entry["best_peer"]
            value = (times(entry["ratio"]) if peer_rate else
                     "every peer: none sustained" if entry["peers_measured"] else "–")
            goal = "≥ 10×" if entry["bound_ms"] == 10 else "–"
            met = "–" if entry["met"] is None else "yes" if entry["met"] else "**no**"
            ratios.append([entry["model"], f"p99 < {entry['bound_ms']} ms", num(sk, 0),
                           f"{num(peer_rate, 0)} ({peer or '–'})", value, goal, met])
        seconds = self.results.get("open_seconds")
        return ("## Open loop: the highest rate each server sustains\n\n"
                "`servekit bench --find-rate` at each server's own request (body, path, content type as in "
                "the closed loop), one-row requests sent on a fixed schedule whatever the answers do, "
                "latency counted from the scheduled send time (so a queue cannot hide behind a slow "
                "answer). Each server in its best configuration: the one of its configurations with the "
                "highest closed-loop req/s on that model. A rate is sustained when no request fails, at "
                "least 95 % of it is answered in the window and p99 is under the bound, in one of two "
                "measurements in a row (the machine is shared: a neighbour's burst must not end a search); "
                "the search doubles the rate from a 16th of the closed-loop req/s until one is not "
                "sustained, then bisects"
                + (f"; {seconds:g} s measured per rate" if seconds else "") + ". p99/p99.9 are measured at "
                "50 % and 90 % of the sustained rate. `< N`: not sustained even at N req/s, the lowest "
                "tried. Client CPU: the most cores the load generator used in a level (near 1.0 it may be "
                "the limit, not the server).\n\n"
                + table(["server", "setting", "model", "req/s @ p99<10 ms", "p99 / p99.9 ms at 50 %",
                         "at 90 %", "req/s @ p99<100 ms", "p99 / p99.9 ms at 50 %", "at 90 %", "client CPU"], rows)
                + ("\nservekit over the best peer (MLServer counts as a peer):\n\n"
                   + table(["model", "bound", "servekit req/s", "best peer req/s", "servekit ÷ best peer",
                            "goal", "met"], ratios) if ratios else ""))

    def open_summary(self) -> list[dict[str, Any]]:
        """Per model and p99 bound: servekit's sustained rate, the best peer's (MLServer counts),
        their ratio and whether the goal (at least 10 times at 10 ms) is met; also written to latest.json."""
        out = []
        for model in OPEN_MODELS:
            for bound in OPEN_BOUNDS:
                sk: float | None = None
                best: tuple[float | None, str | None] = (None, None)
                measured = sk_measured = False
                for name, config in self.configs.items():
                    entry = ((config.get("open") or {}).get(model) or {}).get(bound)
                    if entry is None or entry.get("error"):
                        continue
                    rate = entry.get("rate")
                    if name == "servekit":
                        sk, sk_measured = rate, True
                    elif name != "servekit-before":
                        measured = True
                        if rate is not None and (best[0] is None or rate > best[0]):
                            best = (float(rate), name)
                if not sk_measured and not measured:
                    continue
                value = ratio(sk, best[0])
                met = None
                if bound == "10" and sk is not None and measured:
                    met = best[0] is None or (value is not None and value >= 10)
                out.append({"model": model, "bound_ms": int(bound), "servekit": sk, "best_peer": best[1],
                            "best_peer_rate": best[0], "ratio": None if value is None else round(value, 2),
                            "peers_measured": measured, "met": met})
        return out

    def large_summary(self) -> list[dict[str, Any]]:
        """Per transport, client count and peer: servekit's and the peer's req/s, p99 and CPU per
        request, and servekit ÷ peer for each; also written to latest.json."""
        sk = self.configs.get("servekit", {}).get("large") or {}
        out = []
        for transport in TRANSPORTS:
            for c in ("1", "4"):
                mine = (sk.get(transport) or {}).get(c)
                for name in LARGE_PEERS:
                    cell = ((self.configs.get(name, {}).get("large") or {}).get(transport) or {}).get(c)
                    if cell is None or mine is None:
                        continue
                    entry: dict[str, Any] = {"transport": transport, "connections": int(c), "peer": name}
                    for key in ("rps", "p99_ms", "cpu_ms_per_request"):
                        entry[f"servekit_{key}"], entry[f"peer_{key}"] = mine.get(key), cell.get(key)
                        value = ratio(mine.get(key), cell.get(key))
                        entry[f"ratio_{key}"] = None if value is None else round(value, 3)
                    out.append(entry)
        return out

    def large(self) -> str:
        """10,000x784 requests over JSON, binary and gRPC: servekit and each peer that takes the
        transport, same run, as ratios servekit / peer."""
        sk = self.configs.get("servekit", {}).get("large") or {}
        peers = [n for n in LARGE_PEERS if self.configs.get(n, {}).get("large")]
        if not sk and not peers:
            return ""
        rows = []
        for transport in TRANSPORTS:
            for c in ("1", "4"):
                mine = (sk.get(transport) or {}).get(c)
                for name in peers:
                    other = ((self.configs[name]["large"].get(transport)) or {})
                    cell = other.get(c)
                    if cell is None and not other.get("error"):
                        continue
                    if cell is None:
                        rows.append([transport, c, name, "failed: " + other["error"][:120], "", "", "", "", "",
                                     "", ""])
                        continue
                    rows.append([transport, c, name, num(get(mine, "rps"), 2), num(get(cell, "rps"), 2),
                                 times(ratio(get(mine, "rps"), get(cell, "rps"))),
                                 f"{num(get(mine, 'p50_ms'), 0)} / {num(get(mine, 'p99_ms'), 0)}",
                                 f"{num(get(cell, 'p50_ms'), 0)} / {num(get(cell, 'p99_ms'), 0)}",
                                 times(ratio(get(mine, "p99_ms"), get(cell, "p99_ms"))),
                                 f"{num(get(mine, 'cpu_ms_per_request'), 0)} / {num(get(cell, 'cpu_ms_per_request'), 0)}",
                                 times(ratio(get(mine, "cpu_ms_per_request"), get(cell, "cpu_ms_per_request")))])
                if not any(r[0] == transport and r[1] == c for r in rows) and mine is not None:
                    rows.append([transport, c, "(no peer takes it)", num(get(mine, "rps"), 2), "–", "–",
                                 f"{num(get(mine, 'p50_ms'), 0)} / {num(get(mine, 'p99_ms'), 0)}", "–", "–",
                                 f"{num(get(mine, 'cpu_ms_per_request'), 0)} / –", "–"])
        size = {t: (sk.get(t) or {}).get("body_bytes") for t in TRANSPORTS}
        sizes = ", ".join(f"{t} {num(b / 1e6, 1)} MB" for t, b in size.items() if b)
        seconds = self.results.get("large_seconds")
        return ("## Large requests: 10,000 × 784 FP64 in one request, servekit against the peers\n\n"
                "The whole test set to fashion-logreg in one request (" + (sizes or "sizes not recorded")
                + "): V2 JSON (nested lists), Triton's binary tensor extension (JSON header, raw bytes, "
                "`Inference-Header-Content-Length`) and V2 gRPC `ModelInfer` with `raw_input_contents`, to "
                "each server that takes the transport (Triton through PyTriton without batching, KServe "
                "with 1 worker, MLServer with its defaults: it has no binary extension), "
                "1 and 4 clients sending back to back"
                + (f" for {seconds:g} s" if seconds else "") + " (`benchmarks/large.py`), every request "
                "awaited and counted. Before the load each transport's answer is checked: all 10,000 labels "
                "equal the model's own `predict`. CPU per request: the server's process tree. Ratios are "
                "servekit ÷ peer: above 1 is better for req/s, below 1 for p99 and CPU.\n\n"
                + table(["transport", "conns", "peer", "servekit req/s", "peer req/s", "req/s ratio",
                         "servekit p50 / p99 ms", "peer p50 / p99 ms", "p99 ratio",
                         "CPU ms/req servekit / peer", "CPU ratio"], rows))

    def against_committed(self) -> str:
        """servekit's CPU per request now and in the last committed run: the
        measure a busy machine disturbs least, so a change's cost shows."""
        previous = self.results.get("previous") or {}
        before = previous.get("cpu_ms_per_request") or {}
        rows = []
        for model in MODELS:
            for c in ("1", "16", "64"):
                cell = self.wrk("servekit", model, c)
                now = cpu_ms_per_request(cell) if cell is not None else None
                then = (before.get(model) or {}).get(c)
                if now is None or then is None:
                    continue
                rows.append([model, c, num(then, 3), num(now, 3), times(ratio(now, then))])
        if not rows:
            return ""
        return ("## servekit's CPU per request against the last committed run\n\n"
                f"Committed run {previous.get('run')} (servekit {previous.get('commit')}); "
                "now ÷ then below 1 is cheaper.\n\n"
                + table(["model", "conns", "then CPU ms/req", "now CPU ms/req", "now ÷ then"], rows))

    def environments(self) -> str:
        peers = self.results["machine"].get("peers") or {}
        if not peers:
            return ""
        rows = []
        for name, env in peers.items():
            status = next((f"skipped: {c['skipped']}" for c in self.configs.values()
                           if c.get("peer") == name and c.get("skipped")), "ran")
            rows.append([name, env.get("version", "–"), num(env.get("install_seconds"), 0),
                         num(env.get("install_size_mb"), 0),
                         f"{env.get('scikit_learn', '–')} / {env.get('xgboost', '–')} / {env.get('numpy', '–')}",
                         status])
        return ("## The peers' environments\n\nEach peer installed from PyPI into its own virtualenv "
                "(`benchmarks/peers/install.sh`), with servekit's scikit-learn and XGBoost so all load the "
                "same model files. Install seconds depend on the package cache and the network.\n\n"
                + table(["peer", "version", "install s", "size MB", "scikit-learn / xgboost / numpy", "status"],
                        rows))

    def mixed_runs(self) -> str:
        runs = [c.get("run", self.results.get("run")) for c in self.configs.values()]
        main = max(set(runs), key=runs.count) if runs else None  # the run most numbers come from
        older = [f"{name} ({c.get('measured_at', '?')})" for name, c in self.configs.items()
                 if c.get("run", self.results.get("run")) != main]
        if not older:
            return ""
        return ("\n**Partial re-run**: these configurations come from another run than the rest: "
                + ", ".join(older) + ".\n")

    def targets13(self) -> str:
        """Issue 13's checks, from this run: servekit against the best peer (MLServer counts) at 16 and
        64 connections, the bare-app share, CPU per request against the issue's starting point, and
        the open loop."""
        rows: list[list[str]] = []

        def mark(ok: bool | None) -> str:
            return "–" if ok is None else ("yes" if ok else "**no**")

        for model in ("iris-rf", "fashion-logreg"):
            for conns in ("16", "64"):
                sk = self.wrk("servekit", model, conns)
                best: tuple[dict[str, Any] | None, str] = (None, "")
                for name, config in self.configs.items():
                    if config.get("kind") not in ("peer", "mlserver"):
                        continue
                    cell = self.wrk(name, model, conns)
                    if cell is not None and (best[0] is None or cell["rps"] > best[0]["rps"]):
                        best = (cell, name)
                peer, name = best
                if sk is None or peer is None:
                    continue
                fast, tail = ratio(sk["rps"], peer["rps"]), ratio(sk["p99_ms"], peer["p99_ms"])
                rows.append([f"{model}, {conns} conns, req/s vs the best peer ({name})", f"{num(sk['rps'])}",
                             f"{num(peer['rps'])}", times(fast), "≥ 5×", mark(None if fast is None else fast >= 5)])
                rows.append([f"{model}, {conns} conns, p99 ms vs the same peer", num(sk["p99_ms"], 2),
                             num(peer["p99_ms"], 2), times(tail), "≤ 0.2×",
                             mark(None if tail is None else tail <= 0.2)])
        sk_rps = self.rps("servekit", "fashion-logreg", "16")
        bare = self.rps("bare-servekit-http", "fashion-logreg", "16")
        share = ratio(sk_rps, bare)
        rows.append(["fashion-logreg, 16 conns, share of the bare app on servekit's HTTP server", num(sk_rps),
                     f"bare {num(bare)}", "–" if share is None else f"{share:.0%}", "≥ 50%",
                     mark(None if share is None else share >= 0.5)])
        cell = self.wrk("servekit", "fashion-logreg", "16")
        cpu = cpu_ms_per_request(cell) if cell else None
        rows.append(["fashion-logreg, 16 conns, server CPU ms per request vs the issue's start", num(cpu, 3),
                     num(ISSUE13_CPU_MS, 3), times(ratio(cpu, ISSUE13_CPU_MS)), "≤ 0.5×",
                     mark(None if cpu is None else cpu <= 0.5 * ISSUE13_CPU_MS)])
        xgb = self.rps("servekit", "fashion-xgboost", "16")
        fast = ratio(xgb, ISSUE13_XGBOOST_RPS)
        rows.append(["fashion-xgboost, 16 conns, req/s vs the issue's start", num(xgb), num(ISSUE13_XGBOOST_RPS),
                     times(fast), "≥ 2×", mark(None if fast is None else fast >= 2)])
        xgb_share, start_share = ratio(xgb, bare), ISSUE13_XGBOOST_RPS / ISSUE13_BARE_RPS
        rows.append(["fashion-xgboost, 16 conns, share of the bare app vs the issue's start (the same check on "
                     "a machine that runs slower or faster than that day's)",
                     "–" if xgb_share is None else f"{xgb_share:.1%}", f"{start_share:.1%}",
                     times(ratio(xgb_share, start_share)), "≥ 2×",
                     mark(None if xgb_share is None else xgb_share >= 2 * start_share)])
        for entry in self.open_summary():
            if entry["bound_ms"] != 10:
                continue
            rows.append([f"{entry['model']}, open loop, req/s at p99 < 10 ms vs the best peer "
                         f"({entry['best_peer'] or '–'})", num(entry["servekit"], 0),
                         num(entry["best_peer_rate"], 0) if entry["best_peer_rate"] else "none sustained",
                         times(entry["ratio"]) if entry["best_peer_rate"] else "–", "≥ 10×", mark(entry["met"])])
        if not rows:
            return ""
        return ("## Targets of issue 13\n\nFrom this run. The best peer is the configuration of any peer "
                "(MLServer included) with the highest req/s on that model and load; its p99 is the one "
                "compared. The issue's starting CPU per request is the run it quotes (14,223 req/s on "
                "1.83 cores); its XGBoost start is that run's 5,976.9 req/s, beside a bare app of 70,368.2.\n\n"
                + table(["measure", "servekit", "peer / reference", "ratio", "goal", "met"], rows))

    def targets(self) -> str:
        rows: list[list[str]] = []

        def add(what: str, sk: float | None, ml: float | None, goal: str, ok: bool | None, unit: str,
                value: float | None = None) -> None:
            value = ratio(sk, ml) if value is None else value
            mark = "–" if ok is None else ("yes" if ok else "**no**")
            rows.append([what, f"{num(sk)} {unit}", f"{num(ml)} {unit}", times(value), goal, mark])

        def check(value: float | None, good: Any) -> bool | None:
            return None if value is None else bool(good(value))

        sk, ml = self.rps("servekit", "iris-rf", "64"), self.rps("mlserver", "iris-rf", "64")
        add("iris-rf, 64 conns, vs MLServer default", sk, ml, "≥ 10×", check(ratio(sk, ml), lambda v: v >= 10), "req/s")
        mb = self.rps("mlserver-batch", "iris-rf", "64")
        add("iris-rf, 64 conns, vs MLServer adaptive batching", sk, mb, "≥ 2.5×",
            check(ratio(sk, mb), lambda v: v >= 2.5), "req/s")
        cell, mcell = self.wrk("servekit", "iris-rf", "64"), self.wrk("mlserver", "iris-rf", "64")
        p99 = cell["p99_ms"] if cell else None
        add("iris-rf, 64 conns, p99", p99, mcell["p99_ms"] if mcell else None, "< 50 ms",
            check(p99, lambda v: v < 50), "ms")
        c1, m1 = self.wrk("servekit", "iris-rf", "1"), self.wrk("mlserver", "iris-rf", "1")
        p50, mp50 = (c1["p50_ms"] if c1 else None), (m1["p50_ms"] if m1 else None)
        add("iris-rf, 1 conn, p50", p50, mp50, "≤ 1×", check(ratio(p50, mp50), lambda v: v <= 1), "ms")
        for model in ("fashion-logreg", "fashion-xgboost"):
            sk = self.rps("servekit", model, "16")
            best, name = self.best_mlserver(model, "16")
            add(f"{model}, 16 conns, vs best MLServer ({name or '–'})", sk, best, "≥ 5×",
                check(ratio(sk, best), lambda v: v >= 5), "req/s")
            bare = self.rps("bare-servekit-http", model, "16")
            share = ratio(sk, bare)
            rows.append([f"{model}, 16 conns, share of a bare app on servekit's HTTP server", f"{num(sk)} req/s",
                         f"bare {num(bare)} req/s", "–" if share is None else f"{share:.0%}", "≥ 25%",
                         "–" if share is None else ("yes" if share >= 0.25 else "**no**")])
        ml_json = self.big_seconds("mlserver", "json")
        for protocol, goal in (("json", 0.5), ("binary", 0.1), ("grpc", 0.1)):
            sk = self.big_seconds("servekit", protocol)
            add(f"10,000×784 FP64 as {protocol}, vs MLServer JSON", sk, ml_json, f"≤ {goal}×",
                check(ratio(sk, ml_json), lambda v, g=goal: v <= g), "s")
        skm = self.configs.get("servekit", {}).get("memory_after", {})
        mlm = self.configs.get("mlserver", {}).get("memory_after", {})
        key = "pss_mb" if skm.get("pss_mb") and mlm.get("pss_mb") else "rss_mb"
        add(f"memory after load ({key[:3].upper()}), vs MLServer default", skm.get(key), mlm.get(key), "≤ 1×",
            check(ratio(skm.get(key), mlm.get(key)), lambda v: v <= 1), "MB")
        sk_ready = self.configs.get("servekit", {}).get("ready_s")
        ml_ready = self.configs.get("mlserver", {}).get("ready_s")
        add("time to ready (3 models)", sk_ready, ml_ready, "–", None, "s")
        return "## Targets of issue 3\n\n" + table(["measure", "servekit", "MLServer", "ratio", "goal", "met"], rows)

    def throughput(self) -> str:
        floor = self.results.get("floor", {})
        out = ["## Throughput and latency, one row per request (wrk)\n",
               "MLServer variants: `parallel_workers` 0 and 2, and adaptive batching (`max_batch_size` 32, "
               "`max_batch_time` 0.005) for iris-rf; cells are req/s (p99 ms). Floors: a bare ASGI app "
               "returning a constant V2 body, served by servekit's own HTTP server with one process per "
               "core (servekit's stack), given the same body; and the model's own in-process predict of "
               "one row.\n" + self.uvicorn_floor()]
        for model in MODELS:
            one = floor.get(model, {}).get("one_row_s")
            out.append(f"### {model} — floor: predict of one row takes {num(one * 1000 if one else None, 3)} ms "
                       f"in process\n")
            rows = []
            for c in CONNECTIONS:
                sk, ml = self.wrk("servekit", model, c), self.wrk("mlserver", model, c)
                variants = []
                for name in ("mlserver-pw0", "mlserver-pw2", "mlserver-batch"):
                    cell = self.wrk(name, model, c)
                    variants.append("–" if cell is None else f"{num(cell['rps'])} ({num(cell['p99_ms'])})")
                best, _ = self.best_mlserver(model, c)
                batch = self.rps("mlserver-batch", model, c)
                best_all = max((v for v in (best, batch) if v is not None), default=None)
                rows.append([
                    c, num(get(sk, "rps")), num(get(sk, "p50_ms"), 2), num(get(sk, "p99_ms"), 2),
                    num(get(ml, "rps")), num(get(ml, "p50_ms"), 2), num(get(ml, "p99_ms"), 2),
                    times(ratio(get(sk, "rps"), get(ml, "rps"))),
                    times(ratio(get(sk, "p99_ms"), get(ml, "p99_ms"))),
                    *variants, times(ratio(get(sk, "rps"), best_all)), num(self.rps("bare-servekit-http", model, c)),
                ])
            out.append(table(["conns", "servekit req/s", "p50 ms", "p99 ms", "MLServer req/s", "p50 ms",
                              "p99 ms", "ratio req/s", "ratio p99", "MLServer pw0", "MLServer pw2",
                              "MLServer batching", "vs best MLServer", "floor: bare ASGI req/s"], rows))
        return "\n".join(out)

    def uvicorn_floor(self) -> str:
        levels = self.configs.get("bare-uvicorn", {}).get("wrk", {}).get("fashion-logreg")
        if not levels:
            return ""
        cells = ", ".join(f"{num(levels[c]['rps'], 0)} at {c}" for c in CONNECTIONS if c in levels)
        return (f"\nThe same bare app on uvicorn+httptools+uvloop with one worker per core, for reference "
                f"(fashion-logreg's body): {cells} connections (req/s).\n")

    def bench(self) -> str:
        rows = []
        for model in MODELS:
            sk = self.configs.get("servekit", {}).get("bench", {}).get(model, {}).get("results") or []
            ml = self.configs.get("mlserver", {}).get("bench", {}).get(model, {}).get("results") or []
            by_c = {str(level["concurrency"]): level for level in ml}
            for level in sk:
                other = by_c.get(str(level["concurrency"]), {})
                rows.append([model, str(level["concurrency"]), num(level["throughput"]), num(level["p50_ms"], 2),
                             num(level["p99_ms"], 2), num(level["server_queue_us"], 0),
                             num(level["server_compute_us"], 0), num(level["server_batch"], 1),
                             num(other.get("throughput")), num(other.get("p50_ms"), 2), num(other.get("p99_ms"), 2),
                             times(ratio(level["throughput"], other.get("throughput")))])
        if not rows:
            return ""
        return ("## The same sweep with `servekit bench` (V2 JSON)\n\n"
                "servekit's split comes from its statistics extension: mean queue time per request, mean "
                "compute time per batch, mean requests per batch (one worker's sample). MLServer has no "
                "statistics endpoint.\n\n"
                + table(["model", "conns", "servekit req/s", "p50 ms", "p99 ms", "queue µs", "compute µs",
                         "batch", "MLServer req/s", "p50 ms", "p99 ms", "ratio req/s"], rows))

    def big(self) -> str:
        floor = self.results.get("floor", {}).get("fashion-logreg", {}).get("test_set_s")
        ml_json = self.big_seconds("mlserver", "json")
        rows = []
        for protocol in ("json", "binary", "grpc"):
            sk, ml = self.big_seconds("servekit", protocol), self.big_seconds("mlserver", protocol)
            size = (self.configs.get("servekit", {}).get("large", {}).get(protocol, {}).get("body_bytes")
                    or self.configs.get("servekit", {}).get("big", {}).get(protocol, {}).get("body_bytes"))
            rows.append([protocol, num(size / 1e6 if size else None), num(sk, 3), num(ml, 3) if ml else
                         "not supported" if protocol == "binary" else "–",
                         times(ratio(sk, ml)), times(ratio(sk, ml_json)), num(floor, 3)])
        return ("## The whole test set in one request: 10,000 × 784 FP64 to fashion-logreg\n\n"
                "Median seconds per request, one at a time (the large part's one connection). JSON is the "
                "article's body (nested lists); binary is Triton's binary tensor extension; gRPC sends "
                "`raw_input_contents`.\n\n"
                + table(["protocol", "body MB", "servekit s", "MLServer s", "ratio (same protocol)",
                         "ratio to MLServer JSON", "floor: predict s"], rows))

    def memory(self) -> str:
        rows = []
        for name, config in self.configs.items():
            if config.get("skipped"):
                continue
            idle, after = config.get("memory_idle") or {}, config.get("memory_after") or {}
            rows.append([name, str(idle.get("processes", "–")), num(idle.get("rss_mb"), 0),
                         num(idle.get("pss_mb"), 0), num(after.get("rss_mb"), 0), num(after.get("pss_mb"), 0),
                         num(config.get("ready_s"), 2)])
        text = ("## Memory and start-up\n\nWhole process tree (server, workers, helpers). PSS shares pages "
                "between forked workers fairly; RSS counts shared pages once per process.\n\n"
                + table(["configuration", "processes", "RSS MB idle", "PSS MB idle", "RSS MB after load",
                         "PSS MB after load", "time to ready s"], rows))
        one = self.configs.get("servekit-1-worker", {}).get("memory_idle", {})
        many = self.configs.get("servekit", {}).get("memory_idle", {})
        if one.get("pss_mb") and many.get("pss_mb") and many.get("processes", 0) > one.get("processes", 0):
            extra = (many["pss_mb"] - one["pss_mb"]) / (many["processes"] - one["processes"])
            text += (f"\nservekit idle, PSS: {many['pss_mb']:.0f} MB for its {many['processes']} processes "
                     f"(supervisor and workers, models loaded once before the fork) against "
                     f"{one['pss_mb']:.0f} MB with `--parallel-workers 1` (one process): "
                     + (f"{extra:.0f} MB per extra process.\n" if extra > 0 else
                        "no measurable cost per extra worker.\n"))
        return text

    def noise(self) -> str:
        rows = []
        for name, config in self.configs.items():
            cells = [c for levels in config.get("wrk", {}).values() for c in levels.values() if "other_cpu" in c]
            if not cells:
                continue
            other = [c["other_cpu"] for c in cells]
            server = [c["server_cpu"] for c in cells]
            rows.append([name, num(sum(server) / len(server), 2), num(max(server), 2),
                         num(sum(other) / len(other), 2), num(max(other), 2)])
        if not rows:
            return ""
        return ("## CPU during the wrk runs\n\nCores used by the server's process tree, and by every other "
                "process on the machine except the server and wrk (other work sharing the machine: the "
                "noise in these numbers).\n\n"
                + table(["configuration", "server cores, mean", "max", "other processes' cores, mean", "max"],
                        rows))

    def problems(self) -> str:
        lines = []
        for name, config in self.configs.items():
            if config.get("skipped"):
                lines.append(f"- {name} skipped: {config['skipped']}")
            if config.get("failure"):
                lines.append(f"- **{name} failed**: {config['failure'].splitlines()[0]}")
            for model, levels in config.get("wrk", {}).items():
                for c, cell in levels.items():
                    if cell["errors"]:
                        lines.append(f"- {name} {model} c={c} (wrk): {cell['errors']} errors "
                                     f"of {cell['requests']} requests {cell['error_kinds']}")
            for model, open_cell in (config.get("open") or {}).items():
                for bound in OPEN_BOUNDS:
                    entry = open_cell.get(bound) or {}
                    if entry.get("error"):
                        lines.append(f"- {name} {model} open loop p99<{bound} ms: {entry['error']}")
            for transport, cells in (config.get("large") or {}).items():
                if cells.get("error"):
                    lines.append(f"- **{name} 10,000x784 over {transport}**: {cells['error']}")
                for c, cell in cells.items():
                    if isinstance(cell, dict) and cell.get("errors"):
                        lines.append(f"- {name} 10,000x784 over {transport} c={c}: {cell['errors']} errors of "
                                     f"{cell['errors'] + cell['requests']}, first: {cell['first_error']}")
            for model, report in {**config.get("bench", {}), **config.get("big", {})}.items():
                if report.get("error"):
                    lines.append(f"- {name} {model} (servekit bench): {report['error']}")
                for level in report.get("results", []):
                    if level.get("errors"):
                        lines.append(f"- {name} {model} c={level['concurrency']} (servekit bench): "
                                     f"{level['errors']} errors, first: {level['first_error']}")
        if not lines:
            return "## Errors\n\nNone: every request of every run got a 2xx answer.\n"
        return "## Errors and anomalies\n\n" + "\n".join(lines) + "\n"
