"""Metrics in prometheus_client's multiprocess mode, as servekit runs with
several workers: the data plane adds to the shared files directly (not
through prometheus_client's value objects), and what ``/metrics`` renders
must be exactly what prometheus_client's own API would have written.

Run in a child interpreter: the multiprocess mode is process-wide state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
    from prometheus_client.parser import text_string_to_metric_families
    from servekit.server.metrics import Metrics, share_across_processes

    share_across_processes()
    seconds = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.02, 0.7, 12.0, 0.0025]
    metrics = Metrics()
    for s in seconds[:4]:
        metrics.observe("m", "1", "v2", s)
    metrics.failure("m", "1", "v2", 400)  # the same request counter, written in between
    for s in seconds[4:]:
        metrics.observe("m", "1", "v2", s)
    metrics.failure("other", "", "v2", 404)  # a label set that never succeeded
    assert metrics._slots[("m", "1", "v2")] is not None  # written straight into the files, not through the API
    pid = os.fork()
    if pid == 0:  # a second worker: its own file, added up at render time
        metrics.observe("m", "1", "v2", 0.004)
        metrics.failure("m", "1", "v2", 503)
        os._exit(0)
    os.waitpid(pid, 0)
    metrics.observe("m", "2", "rest", 0.05)  # a label set made after the fork
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            key = sample.name + json.dumps(sample.labels, sort_keys=True)
            out[key] = sample.value
    print(json.dumps(out))
    """
)


def labels(**values: str) -> str:
    return json.dumps(values, sort_keys=True)


def test_counts_sums_and_buckets_match_what_prometheus_would_render(tmp_path: Path) -> None:
    shared = tmp_path / "prom"
    shared.mkdir()
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(shared)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    samples = json.loads(result.stdout)
    m1 = {"model": "m", "protocol": "v2", "version": "1"}
    # 9 answered + 1 failed in the parent, 1 answered + 1 failed in the child
    assert samples["servekit_model_requests_total" + labels(**m1)] == 12
    assert samples["servekit_model_request_failures_total" + labels(**m1, status="400")] == 1
    assert samples["servekit_model_request_failures_total" + labels(**m1, status="503")] == 1
    assert samples["servekit_model_requests_total" + labels(model="other", protocol="v2", version="")] == 1
    assert samples["servekit_model_requests_total" + labels(model="m", protocol="rest", version="2")] == 1
    observed = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.02, 0.7, 12.0, 0.0025, 0.004]
    assert abs(samples["servekit_model_request_duration_seconds_sum" + labels(**m1)] - sum(observed)) < 1e-9
    assert samples["servekit_model_request_duration_seconds_count" + labels(**m1)] == len(observed)
    # cumulative buckets, with prometheus' rule: a value lands in the first bound >= it
    expected = {"0.0005": 2, "0.001": 3, "0.0025": 4, "0.005": 7, "0.01": 7, "0.025": 8, "0.05": 8,
                "0.1": 8, "0.25": 8, "0.5": 8, "1.0": 9, "2.5": 9, "5.0": 9, "10.0": 9, "+Inf": 10}
    got = {le: samples["servekit_model_request_duration_seconds_bucket" + labels(**m1, le=le)] for le in expected}
    assert got == expected
    m2 = {"model": "m", "protocol": "rest", "version": "2"}
    assert samples["servekit_model_request_duration_seconds_bucket" + labels(**m2, le="0.05")] == 1
    assert samples["servekit_model_request_duration_seconds_bucket" + labels(**m2, le="0.025")] == 0
