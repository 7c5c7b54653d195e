"""Process model: one worker per core, each a full server, sharing the ports
with SO_REUSEPORT; a supervisor loads the models once before forking (so the
workers share their memory copy-on-write), replaces workers that die and
relays repository changes between them.

With one worker, the supervisor is skipped and the server runs in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from servekit.config import ServerSettings
from servekit.errors import ConfigError
from servekit.registry import Registry
from servekit.repository.sources import ModelSources

log = logging.getLogger("servekit.server")

# set by protocol modules that need extra setup in a worker (gRPC, pollers …)
WorkerHook = Callable[["Worker"], Awaitable[None]]
WORKER_HOOKS: list[WorkerHook] = []
# repository changes that protocol modules relay between workers themselves
# (action -> handler of its argument); load/unload are built in
ControlAction = Callable[["Worker", str], Awaitable[None]]
CONTROL_ACTIONS: dict[str, ControlAction] = {}


def worker_count(settings: ServerSettings) -> int:
    if settings.parallel_workers is not None and settings.parallel_workers > 0:
        return settings.parallel_workers
    return os.cpu_count() or 1


def configure_threads(settings: ServerSettings, workers: int) -> int:
    """Size OpenMP/BLAS pools so workers x threads does not exceed the cores:
    environment variables for libraries loaded later, threadpoolctl for those
    already loaded (numpy's BLAS)."""
    threads = settings.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    limit_loaded_pools(threads)
    # a prediction thread waiting to hand its result back waits at most this long
    # for the event loop's thread to yield the GIL (Python's default is 5 ms)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    return threads


def limit_loaded_pools(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it only the variables apply
        return
    threadpool_limits(limits=threads)


def listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class LineReader:
    """Splits a byte stream into complete lines (a recv may end mid-line)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        *lines, self._pending = (self._pending + data).split(b"\n")
        return [line.decode() for line in lines if line]


class Worker:
    """One serving process (or the only one): registry, HTTP and gRPC servers."""

    def __init__(
        self,
        settings: ServerSettings,
        sources: ModelSources,
        registry: Registry | None = None,
        control: socket.socket | None = None,
        reuse_port: bool = False,
        index: int = 0,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.registry = registry
        self.control = control
        self.reuse_port = reuse_port
        self.index = index
        self.tasks: list[asyncio.Task[Any]] = []
        self.cleanups: list[Callable[[], Awaitable[None]]] = []
        self.ctx: Any = None

    async def run(self) -> None:
        from servekit.server.assembly import build_app, build_context

        settings = self.settings
        if self.registry is None:
            self.registry = Registry(settings)
            if settings.load_models_at_startup:
                await self.registry.apply(self.sources.wanted())
        else:
            self.registry.after_fork()
            if settings.load_models_at_startup:
                # what the supervisor left to the workers: runtimes that do not survive fork
                await self.registry.apply(self.sources.wanted())
        # frameworks loaded with the models have pools of their own by now
        limit_loaded_pools(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.ctx = build_context(settings, self.registry, self.sources)
        if self.control is not None:
            self.ctx.on_repository_change.append(self._broadcast)
            self._control_reader = LineReader()
            self._control_queue: asyncio.Queue[str] = asyncio.Queue()
            self.tasks.append(asyncio.get_running_loop().create_task(self._apply_controls()))
            asyncio.get_running_loop().add_reader(self.control.fileno(), self._on_control)
        app, ports = build_app(self.ctx)
        sockets = [listen(host, port, self.reuse_port) for host, port in ports]
        for hook in WORKER_HOOKS:
            await hook(self)
        if self.control is not None:
            self.control.sendall(b"ready\n")
        else:
            announce(settings)
        try:
            await serve_http(app, sockets, settings)
        finally:
            for task in self.tasks:
                task.cancel()
            for cleanup in self.cleanups:
                await cleanup()

    async def _broadcast(self, action: str, name: str) -> None:
        assert self.control is not None
        try:
            self.control.sendall(f"{action} {name}\n".encode())
        except OSError as exc:  # the supervisor is gone; this worker is shutting down
            log.warning("Could not relay %s %s to the other workers: %s", action, name, exc)

    def _on_control(self) -> None:
        assert self.control is not None
        data = self.control.recv(65536)
        if not data:
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            return
        for line in self._control_reader.feed(data):
            self._control_queue.put_nowait(line)

    async def _apply_controls(self) -> None:
        """Apply relayed changes one at a time, in the order they were made."""
        while True:
            action, _, name = (await self._control_queue.get()).partition(" ")
            await self.apply_control(action, name)

    async def apply_control(self, action: str, name: str) -> None:
        """Repeat a repository change made in a sibling worker."""
        assert self.registry is not None
        try:
            if action == "load":
                self.sources.unloaded.discard(name)
                for settings in await self.sources.find(name):
                    await self.registry.load(settings)
            elif action == "unload":
                self.sources.unloaded.add(name)
                if name in self.registry.models:
                    await self.registry.unload(name)
            elif action in CONTROL_ACTIONS:
                await CONTROL_ACTIONS[action](self, name)
        except Exception:
            log.exception("Worker %d could not apply %s %s", self.index, action, name)


def check_ports_free(settings: ServerSettings) -> None:
    """Fail at start with a clear message when a port is taken (SO_REUSEPORT
    would otherwise let two servers share a port silently)."""
    from servekit.server.assembly import listening_ports

    ports = [(host, port, "HTTP") for host, port in listening_ports(settings)]
    if settings.enable_grpc:
        ports.append((settings.host, settings.grpc_port, "gRPC"))
    if settings.port:  # TF Serving's gRPC API
        for _, port, kind in ports:
            if port == settings.port:
                raise ConfigError(f"--port={port} (TF Serving gRPC) is also the {kind} port; choose another")
        ports.append((settings.host, settings.port, "TF Serving gRPC"))
    for host, port, kind in ports:
        try:
            listen(host, port, reuse_port=False).close()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({kind}): {exc.strerror}; "
                "stop whatever uses it or choose another port (--http-port, --grpc-port, "
                "--metrics-port, --port …)"
            ) from None


async def serve_http(app: Any, sockets: list[socket.socket], settings: ServerSettings) -> None:
    """Serve until SIGTERM/SIGINT with servekit's HTTP server, or uvicorn's
    when ``http_server`` is "uvicorn"; either way the worker returns normally,
    so its cleanups (gRPC shutdown, pollers) run."""
    loop = asyncio.get_running_loop()
    if settings.http_server == "uvicorn":
        server: Any = _uvicorn_server(app)
        stop = server.handle_exit_now
        serving = server.serve(sockets=sockets)
    else:
        from servekit.server.http_server import HttpServer

        server = HttpServer(app, max_body=settings.max_request_size)
        stop = server.stop
        serving = server.serve(sockets)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await serving
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _uvicorn_server(app: Any) -> Any:
    import uvicorn
    from uvicorn.protocols.http import httptools_impl

    # buffer 4 MiB of a body before pausing reading (64 KiB turns a 60 MB tensor
    # into a thousand pause/resume round trips)
    limit = 4 * 1024 * 1024
    httptools_impl.HIGH_WATER_LIMIT = max(httptools_impl.HIGH_WATER_LIMIT, limit)  # type: ignore[attr-defined]

    class SignalFreeServer(uvicorn.Server):
        """uvicorn's server with the worker's own signal handling."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def handle_exit_now(self) -> None:
            self.should_exit = True

    config = uvicorn.Config(
        app,
        http="httptools",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_keep_alive=30,
        server_header=False,
        date_header=False,
    )
    return SignalFreeServer(config)


def announce(settings: ServerSettings, workers: int = 1) -> None:
    from servekit.server.assembly import describe_ports

    for line in describe_ports(settings):
        log.info("%s", line)
    log.info("servekit ready with %d worker%s (pid %d)", workers, "s" if workers > 1 else "", os.getpid())


def run_loop(coro: Awaitable[None]) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(coro)  # type: ignore[arg-type]


def serve(settings: ServerSettings, sources: ModelSources) -> None:
    workers = worker_count(settings)
    configure_threads(settings, workers)
    check_ports_free(settings)
    if workers <= 1:
        run_loop(Worker(settings, sources).run())
        return
    from servekit.server.metrics import remove_shared, share_across_processes

    metrics_dir = share_across_processes()
    try:
        Supervisor(settings, sources, workers).run()
    finally:
        remove_shared(metrics_dir)


class Supervisor:
    def __init__(self, settings: ServerSettings, sources: ModelSources, workers: int) -> None:
        self.settings = settings
        self.sources = sources
        self.workers = workers
        self.children: dict[int, tuple[int, socket.socket]] = {}  # pid -> (index, control)
        self.events: list[str] = []  # repository changes, replayed to new workers
        self.stopping = False
        self.registry: Registry | None = None

    def run(self) -> None:
        self.registry = Registry(self.settings, executor=ThreadPoolExecutor(max_workers=2))
        if self.settings.load_models_at_startup:
            from servekit.runtimes import survives_fork

            preload = [s for s in self.sources.wanted() if survives_fork(s)]
            asyncio.run(self.registry.apply(preload))
        self.registry.executor.shutdown(wait=True)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(self.workers):
            self._spawn(index)
        selector = selectors.DefaultSelector()
        for _, (_, control) in self.children.items():
            selector.register(control, selectors.EVENT_READ)
        readers: dict[int, LineReader] = {}
        ready = 0
        while not self.stopping:
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(65536)
                if not data:
                    selector.unregister(sock)
                    continue
                for line in readers.setdefault(sock.fileno(), LineReader()).feed(data):
                    if line == "ready":
                        ready += 1
                        if ready == self.workers:
                            announce(self.settings, self.workers)
                    else:
                        self.events.append(line)
                        self._relay(line, sock)
            for pid, status in self._reap():
                index, control = self.children.pop(pid)
                with contextlib.suppress(KeyError):  # already dropped at end-of-file
                    selector.unregister(control)
                readers.pop(control.fileno(), None)
                control.close()
                if not self.stopping:
                    log.warning("Worker %d (pid %d) died (%s); starting a new one", index, pid, status)
                    control = self._spawn(index)
                    selector.register(control, selectors.EVENT_READ)
                    ready -= 1
        self._shutdown()

    def _spawn(self, index: int) -> socket.socket:
        parent, child = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            parent.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                worker = Worker(self.settings, self.sources, self.registry, child, True, index)
                events = list(self.events)

                async def main() -> None:
                    for line in events:
                        action, _, name = line.partition(" ")
                        await worker.apply_control(action, name)
                    await worker.run()

                run_loop(main())
            except BaseException:
                log.exception("Worker %d failed", index)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        child.close()
        self.children[pid] = (index, parent)
        return parent

    def _relay(self, line: str, source: socket.socket) -> None:
        for _, control in self.children.values():
            if control is not source:
                with contextlib.suppress(OSError):  # a dying worker; it is replaced
                    control.sendall((line + "\n").encode())

    def _reap(self) -> list[tuple[int, str]]:
        dead = []
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.children:
                if os.WIFSIGNALED(status):
                    dead.append((pid, f"signal {os.WTERMSIG(status)}"))
                else:
                    dead.append((pid, f"exit code {os.waitstatus_to_exitcode(status)}"))
        return dead

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.children and time.monotonic() < deadline:
            for pid, _ in self._reap():
                self.children.pop(pid, None)
            time.sleep(0.05)
        for pid in self.children:
            os.kill(pid, signal.SIGKILL)
        log.info("servekit stopped")
