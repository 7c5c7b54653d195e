"""Real Redis and a real S3-compatible server (moto's server mode) on free ports."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import free_port

ROOT = Path(__file__).resolve().parents[2]
SENTIMENT = ROOT / "examples" / "sentiment"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        for _ in range(300):
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def create_bucket(self, name: str) -> str:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")
        s3.create_bucket(Bucket=name)
        return f"s3://{name}/assets"


@pytest.fixture(scope="session", autouse=True)
def aws_credentials() -> Iterator[None]:
    # moto accepts any credentials; set fake ones so nothing looks for real ones
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.delenv("AWS_PROFILE", raising=False)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sentiment_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local asset store holding the trained sentiment assets (version 1.0)."""
    if str(SENTIMENT) not in sys.path:
        sys.path.insert(0, str(SENTIMENT))
    import train  # examples/sentiment/train.py

    store = tmp_path_factory.mktemp("store")
    train.push(str(store))
    return str(store)
