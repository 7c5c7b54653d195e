"""A model served from its own virtual environment, in a process of its own.

Chosen for any model whose settings ask for an environment
(``"parameters": {"environment": true}`` or a file name; :mod:`servekit.envs.spec`).
``load`` builds or reuses the environment (:mod:`servekit.envs.build`; a build
runs in the registry's thread pool, never on the event loop), starts
``<env>/bin/python -I -m servekit.envs.child`` and hands it the model's
settings without ``environment``: the child loads the model with the runtime
chosen for it as the server would (sklearn, MLflow, a Python class …) and
answers with its metadata and batch axis.

``predict`` is async: the request goes to the child over a Unix socket pair in
:mod:`servekit.envs.wire`'s framing (tensors as raw bytes, no pickle), and the
answer is checked before it becomes an :class:`InferenceResponse`. The
batcher serialises calls, so one call is in flight at a time. A child that
exits, breaks the framing or is abandoned mid-answer (its call cancelled) is
killed and restarted in a thread; the call in flight, and calls until the new
child is ready, fail with 503 saying so. After :data:`MAX_CRASHES` failures in
a row (no answer between them) it is not restarted: reloading the model does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from servekit.config import ModelSettings
from servekit.envs import wire
from servekit.envs.build import BuiltEnv, build_timeout, ensure
from servekit.envs.spec import read_spec
from servekit.errors import (
    InvalidInput,
    ModelLoadError,
    ModelNotReady,
    RequestTimedOut,
    ServekitError,
)
from servekit.runtimes.base import Runtime
from servekit.tensors import InferenceRequest, InferenceResponse, ModelMetadata, TensorSpec

log = logging.getLogger("servekit.envs")

MAX_CRASHES = 3
MAX_SPECS = 4096
SOCKET_BUFFER = 4 << 20
_ERRORS: dict[int, type[ServekitError]] = {400: InvalidInput, 503: ModelNotReady, 504: RequestTimedOut}


def model_folder(settings: ModelSettings) -> Path:
    """The folder whose environment files the model names."""
    uri = settings.parameters.uri
    if uri and uri.startswith(("runs:/", "models:/")):
        raise ModelLoadError(
            "a model in its own environment must be in a local folder (runs:/ and models:/ URIs are not "
            "supported with 'environment'; download the model into the repository)"
        )
    path = settings.resolved_uri()
    if path is None or not path.exists():
        raise ModelLoadError("environment: the model's folder is not found")
    return path if path.is_dir() else path.parent


class IsolatedRuntime(Runtime):
    platform: ClassVar[str] = ""
    is_async: ClassVar[bool] = True
    fork_safe: ClassVar[bool] = False  # a child process and its socket belong to one worker

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__(settings)
        self.env: BuiltEnv | None = None
        self.child_python = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._meta: ModelMetadata | None = None
        self._crashes = 0
        self._gave_up = ""
        self._closed = False
        self._lock = threading.Lock()
        self.restarts = 0

    # -- loading --------------------------------------------------------------------
    def load(self) -> None:
        folder = model_folder(self.settings)
        value = self.settings.parameters.environment
        assert value is not None and value is not False
        spec = read_spec(folder, value)
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        if spec.python and not (spec.python == running or spec.python.startswith(running + ".")):
            log.warning("Model %r asks for Python %s in %s; its environment uses the server's Python %s",
                        self.name, spec.python[:20], spec.source, sys.version.split()[0])
        if spec.ignored:
            log.warning("Model %r: %s names conda packages that are not installed (only its pip section is): %s",
                        self.name, spec.source, ", ".join(spec.ignored[:10]))
        self.env = ensure(spec, self.name)
        self._start()
        self.ready = True

    def _child_settings(self) -> dict[str, Any]:
        parameters = self.settings.parameters.model_copy(update={"environment": None})
        return self.settings.model_copy(update={"parameters": parameters}).model_dump(mode="json")

    def _start(self) -> None:
        """Start the child and wait (in this thread) for its ``ready``."""
        assert self.env is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (ours, theirs):  # large tensors cross in fewer wake-ups (the kernel caps these)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        environ["VIRTUAL_ENV"] = str(self.env.path)
        environ["PATH"] = str(self.env.path / "bin") + os.pathsep + environ.get("PATH", "")
        try:
            proc = subprocess.Popen(
                [str(self.env.python), "-I", "-m", "servekit.envs.child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=2, env=environ,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise ModelLoadError(f"cannot start the model's environment: {exc.strerror}") from None
        finally:
            theirs.close()
        try:
            ours.settimeout(build_timeout())
            wire.send(ours, wire.frame({"op": "load", "settings": self._child_settings()}))
            header, _ = wire.receive(ours, wire.MAX_HEADER)
        except (EOFError, OSError, wire.WireError) as exc:
            ours.close()
            code = _stop(proc)
            why = "did not answer in time" if isinstance(exc, TimeoutError) else f"exited with code {code}"
            raise ModelLoadError(
                f"the model's process in its own environment {why} while loading (its output is in the "
                "server's log)"
            ) from None
        if header.get("op") != "ready":
            ours.close()
            _stop(proc)
            message = str(header.get("message") or "the model's process did not load it")[:2000]
            raise ModelLoadError(f"in its own environment: {message}")
        self._meta = _metadata(header.get("metadata"), self.settings)
        axis = header.get("batch_axis")
        self.batch_axis = 0 if axis == 0 else None  # type: ignore[misc]
        python = header.get("python")
        self.child_python = python[:40] if isinstance(python, str) else ""
        ours.setblocking(False)
        with self._lock:
            self._proc, self._sock = proc, ours

    # -- serving ----------------------------------------------------------------------
    async def predict(self, request: InferenceRequest) -> InferenceResponse:  # type: ignore[override]
        sock = self._sock
        if sock is None:
            raise ModelNotReady(self._not_running())
        pieces = wire.request_message(request)
        loop = asyncio.get_running_loop()
        try:
            header, body = await _exchange(loop, sock, pieces)
        except (EOFError, OSError, wire.WireError) as exc:
            why = "broke the framing" if isinstance(exc, wire.WireError) else "exited"
            raise ModelNotReady(self._broken(sock, why)) from None
        except BaseException:
            self._broken(sock, "was abandoned in the middle of an answer")
            raise
        op = header.get("op")
        if op == "error":
            self._crashes = 0
            status = header.get("status")
            cls = _ERRORS.get(status, ServekitError) if isinstance(status, int) else ServekitError
            raise cls(str(header.get("message") or "the model failed")[:4000])
        try:
            if op != "result":
                raise wire.WireError(f"unexpected message {str(op)[:20]!r}")
            response = wire.parse_response(header, body)
        except wire.WireError as exc:
            raise ModelNotReady(self._broken(sock, f"sent a bad answer ({exc})")) from None
        self._crashes = 0
        return response

    def _not_running(self) -> str:
        if self._gave_up:
            return self._gave_up
        return f"model {self.name!r}: its process (in its own environment) is restarting; retry shortly"

    def _broken(self, sock: socket.socket, why: str) -> str:
        """Drop the child behind ``sock``; restart it unless it failed too often."""
        with self._lock:
            if self._sock is not sock:
                return self._not_running()
            proc, self._proc, self._sock = self._proc, None, None
        sock.close()
        self._crashes += 1
        if self._closed:
            return f"model {self.name!r} is unloading"
        if self._crashes > MAX_CRASHES:
            self._gave_up = (
                f"model {self.name!r}: its process (in its own environment) failed {self._crashes} times in a "
                "row; not restarted (reload the model)"
            )
            log.error("%s", self._gave_up)
            if proc is not None:
                threading.Thread(target=_stop, args=(proc,), daemon=True).start()
            return self._gave_up
        threading.Thread(target=self._restart, args=(proc, why), name=f"servekit-restart-{self.name}",
                         daemon=True).start()
        return f"model {self.name!r}: its process (in its own environment) {why}; it is being restarted"

    def _restart(self, old: subprocess.Popen[bytes] | None, why: str) -> None:
        code = _stop(old) if old is not None else None
        exit_note = f" (exit code {code})" if code is not None else ""
        log.error("Model %r: its process %s%s; restarting it", self.name, why, exit_note)
        while not self._closed:
            try:
                self._start()
                self.restarts += 1
                log.info("Model %r: its process restarted", self.name)
                return
            except ServekitError as exc:
                self._crashes += 1
                log.error("Model %r: restarting its process failed: %s", self.name, exc.message)
                if self._crashes > MAX_CRASHES:
                    self._gave_up = (
                        f"model {self.name!r}: its process (in its own environment) could not be restarted: "
                        f"{exc.message[:300]}"
                    )
                    return
                time.sleep(min(2.0**self._crashes, 10.0))

    def unload(self) -> None:
        self._closed = True
        with self._lock:
            proc, sock, self._proc, self._sock = self._proc, self._sock, None, None
        if sock is not None:
            sock.close()  # the child reads the end of its input and exits
        if proc is not None:
            _stop(proc, grace=10.0)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    # -- metadata -------------------------------------------------------------------
    def metadata(self) -> ModelMetadata:
        if self._meta is not None:
            return self._meta
        return super().metadata()


async def _exchange(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, pieces: list[bytes | memoryview]
) -> tuple[dict[str, Any], bytearray]:
    for piece in pieces:
        await loop.sock_sendall(sock, piece)
    prefix = await _read(loop, sock, wire.PREFIX.size)
    head_len, body_len = wire.parse_prefix(bytes(prefix), wire.MAX_BODY)
    header = wire.parse_header(bytes(await _read(loop, sock, head_len)))
    return header, await _read(loop, sock, body_len)


async def _read(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = await loop.sock_recv_into(sock, view[got:])
        if n == 0:
            raise EOFError
        got += n
    return buffer


def _stop(proc: subprocess.Popen[bytes], grace: float = 2.0) -> int | None:
    """Wait for ``proc`` to exit (it was told to, or its socket closed), then kill it."""
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _metadata(data: Any, settings: ModelSettings) -> ModelMetadata:
    if not isinstance(data, dict):
        raise ModelLoadError("the model's process sent no metadata")

    def specs(key: str) -> list[TensorSpec]:
        items = data.get(key) or []
        if not isinstance(items, list) or len(items) > MAX_SPECS:
            raise ModelLoadError(f"the model's process sent bad {key} metadata")
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise ModelLoadError(f"the model's process sent bad {key} metadata")
            shape = item.get("shape") or []
            parameters = item.get("parameters") or {}
            out.append(TensorSpec(
                name=str(item.get("name", ""))[:1024], datatype=str(item.get("datatype", ""))[:16],
                shape=[int(d) for d in shape if isinstance(d, int)][:32] if isinstance(shape, list) else [],
                parameters=parameters if isinstance(parameters, dict) else {},
            ))
        return out

    versions = data.get("versions") or []
    parameters = data.get("parameters") or {}
    return ModelMetadata(
        name=settings.name,
        platform=str(data.get("platform") or "")[:256],
        versions=[str(v)[:128] for v in versions][:64] if isinstance(versions, list) else [],
        inputs=specs("inputs"),
        outputs=specs("outputs"),
        parameters=parameters if isinstance(parameters, dict) else {},
    )
