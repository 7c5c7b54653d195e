"""Process model: one worker per core, each a full server, sharing the ports
with SO_REUSEPORT; a supervisor loads the models once before forking (so the
workers share their memory copy-on-write), replaces workers that die and
relays every change to what is served between them (see
:mod:`servekit.server.lifecycle`): a change that asks to wait is answered once
every worker has applied it.

With one worker, the supervisor is skipped and the server runs in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import selectors
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from servekit.config import ServerSettings
from servekit.errors import ConfigError, ServekitError
from servekit.registry import Registry
from servekit.repository.sources import ModelSources
from servekit.residency import attach as attach_residency
from servekit.residency import loads_at_startup
from servekit.server.balance import Loads, Share
from servekit.server.lifecycle import Change, ChangeFailed, ChangeHandler, ServerContext, Skin, Stop
from servekit.server.reports import ReportRelay, Reports

log = logging.getLogger("servekit.server")

# kinds of change that carry a whole state: the journal keeps only the newest of each
SUPERSEDING = frozenset({"repository.sync", "tfserving.config"})


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

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self._pending = (self._pending + data).split(b"\n")
        return [line for line in lines if line]


# the lines between a worker and the supervisor (each ends with a newline):
#   worker -> supervisor  ready | change <Change> | applied <id> <reason JSON>
#                         | gather <id> | report <id> <JSON>          (see servekit.server.reports)
#   supervisor -> worker  apply <Change> | done <id> <failures JSON>
#                         | collect <id> | gathered <id> <JSON>
CHANGE_WAIT_SECONDS = 900.0  # a change that asks to wait gives up on slow workers after this


class Worker:
    """One serving process (or the only one): registry, data plane and skins."""

    def __init__(
        self,
        settings: ServerSettings,
        sources: ModelSources,
        skins: list[Skin],
        registry: Registry | None = None,
        control: socket.socket | None = None,
        reuse_port: bool = False,
        index: int = 0,
        journal: list[bytes] | None = None,
        shared: Shared | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared  # the supervisor's listening sockets and connection counts
        self.sources = sources
        self.skins = [skin for skin in skins if skin.enabled(settings)]
        self.registry = registry
        self.control = control
        self.reuse_port = reuse_port
        self.index = index
        self.journal = list(journal or [])
        self.handlers = change_handlers(self.skins)
        self.tasks: list[asyncio.Task[Any]] = []
        self.stops: list[Stop] = []
        self.ctx: ServerContext | None = None
        self._waiting: dict[str, asyncio.Future[dict[int, str]]] = {}
        self._control_reader = LineReader()
        self._control_queue: asyncio.Queue[Change] = asyncio.Queue()

    async def run(self) -> None:
        from servekit.server.assembly import build_app, build_context, secure_ports
        from servekit.server.tls import load as load_tls

        settings = self.settings
        if self.registry is None:
            self.registry = Registry(settings)
        else:
            self.registry.after_fork()
        if loads_at_startup(settings):  # else each on its first request (servekit.residency)
            # in a forked worker: what the supervisor left to the workers
            # (runtimes that do not survive fork)
            await self.registry.apply(self.sources.wanted(), show_progress=self.control is None)
        # frameworks loaded with the models have pools of their own by now
        limit_loaded_pools(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.ctx = ctx = build_context(settings, self.registry, self.sources, self.index)
        ctx.make_change = self.make_change
        ctx.reports = Reports(self.index)
        attach_residency(ctx)
        if self.control is not None:
            ctx.reports.connect(self.control.sendall)
        for line in self.journal:  # a replacement worker catches up before it serves
            await self._apply_quietly(Change.decode(line))
        if self.control is not None:
            self.tasks.append(asyncio.get_running_loop().create_task(self._apply_relayed()))
            asyncio.get_running_loop().add_reader(self.control.fileno(), self._on_control)
        app, ports = build_app(ctx, self.skins)
        shared = self.shared
        if shared is not None:  # opened by the supervisor from the same listening_ports(settings)
            sockets, share = shared.sockets, shared.loads.share(self.index)
        else:
            sockets, share = [listen(host, port, self.reuse_port) for host, port in ports], None
        tls, secure = load_tls(settings), secure_ports(settings)
        contexts = [tls.context if tls is not None and port in secure else None for _, port in ports]
        try:
            for skin in self.skins:
                if skin.start is not None:
                    stop = await skin.start(ctx)
                    if stop is not None:
                        self.stops.append(stop)
            # what start-up made lives as long as the worker: keep it out of the
            # collector's generations, so collections under load stay short
            gc.collect()
            gc.freeze()
            if share is not None:
                share.publish(0)  # counted by its siblings from now on: it serves next
            if self.control is not None:
                self.control.sendall(b"ready\n")
            else:
                announce(settings)
            await serve_http(app, sockets, settings, contexts, share)
        finally:
            for task in self.tasks:
                task.cancel()
            for stop in reversed(self.stops):
                await stop()

    # -- changes ------------------------------------------------------------
    async def apply_change(self, change: Change) -> None:
        """The one function that applies a change, here or relayed from a sibling."""
        assert self.ctx is not None
        handler = self.handlers.get(change.kind)
        if handler is None:
            self.ctx.metrics.change_failures.labels(change.kind[:64]).inc()
            log.error("Worker %d got a change of unknown kind %r", self.index, change.kind[:64])
            raise ServekitError(f"unknown change kind {change.kind[:64]!r}")
        try:
            await handler(self.ctx, change)
        except Exception:
            self.ctx.metrics.change_failures.labels(change.kind).inc()
            raise

    async def make_change(self, change: Change, wait: bool) -> None:
        """Apply a change here, relay it to every other worker and, with
        ``wait``, return once all have applied it."""
        local: BaseException | None = None
        try:
            await self.apply_change(change)
        except Exception as exc:
            local = exc
        failures: dict[int, str] = {}
        if self.control is not None:
            future: asyncio.Future[dict[int, str]] | None = None
            if wait:
                future = asyncio.get_running_loop().create_future()
                self._waiting[change.id] = future
            try:
                self.control.sendall(b"change " + change.encode() + b"\n")
            except OSError as exc:  # the supervisor is gone; this worker is shutting down
                self._waiting.pop(change.id, None)
                raise ServekitError(f"could not relay the change to the other workers: {exc}") from None
            if future is not None:
                try:
                    failures = await asyncio.wait_for(future, CHANGE_WAIT_SECONDS)
                except TimeoutError:
                    raise ServekitError(
                        f"the other workers did not apply the change within {CHANGE_WAIT_SECONDS:g} s"
                    ) from None
                finally:
                    self._waiting.pop(change.id, None)
        if local is not None:
            raise local
        if failures:
            detail = "; ".join(f"worker {i}: {reason}" for i, reason in sorted(failures.items()))
            raise ChangeFailed(f"applied here but not by every worker ({detail})", failures)

    async def _apply_quietly(self, change: Change) -> str:
        """Apply a relayed or replayed change; its error, as text ('' if none)."""
        try:
            await self.apply_change(change)
        except ServekitError as exc:
            log.error("Worker %d could not apply %s: %s", self.index, change.kind, exc.message)
            return exc.message
        except Exception as exc:
            log.exception("Worker %d could not apply %s", self.index, change.kind)
            return f"{type(exc).__name__}: {exc}"
        return ""

    def _on_control(self) -> None:
        assert self.control is not None
        data = self.control.recv(1 << 20)
        if not data:
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            # the supervisor is gone (killed): a worker never outlives it
            log.error("Worker %d lost its supervisor; stopping", self.index)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        for line in self._control_reader.feed(data):
            verb, _, rest = line.partition(b" ")
            if verb == b"apply":
                try:
                    self._control_queue.put_nowait(Change.decode(rest))
                except ServekitError as exc:
                    log.error("Worker %d got a malformed change: %s", self.index, exc.message)
            elif verb == b"collect" and self.ctx is not None:
                self.ctx.reports.on_collect(rest)
            elif verb == b"gathered" and self.ctx is not None:
                self.ctx.reports.on_gathered(rest)
            elif verb == b"done":
                change_id, _, failures = rest.partition(b" ")
                future = self._waiting.get(change_id.decode("ascii", "replace"))
                if future is not None and not future.done():
                    future.set_result({int(k): str(v) for k, v in orjson.loads(failures or b"{}").items()})
            else:
                log.error("Worker %d got an unknown control line %r", self.index, verb[:32])

    async def _apply_relayed(self) -> None:
        """Apply relayed changes one at a time, in the order they were made,
        answering the supervisor after each."""
        assert self.control is not None
        while True:
            change = await self._control_queue.get()
            reason = await self._apply_quietly(change)
            answer = b"applied " + change.id.encode() + b" " + orjson.dumps(reason) + b"\n"
            try:
                self.control.sendall(answer)
            except OSError:
                return


def change_handlers(skins: list[Skin]) -> dict[str, ChangeHandler]:
    """Every kind of change and the one function that applies it."""
    handlers: dict[str, ChangeHandler] = {}
    for skin in skins:
        for kind, handler in skin.changes.items():
            if kind in handlers:
                raise ConfigError(f"two skins apply changes of kind {kind!r} (the second is {skin.name})")
            handlers[kind] = handler
    return handlers


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (prctl
    PR_SET_PDEATHSIG), so a supervisor killed with -9 leaves no orphan workers;
    elsewhere the control socket's end-of-file stops the worker instead."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1: PR_SET_PDEATHSIG; SIGTERM drains
    except (OSError, AttributeError):
        pass


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
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(
                    f"cannot listen on host {host!r} (--host): {exc.strerror}; give an address of this "
                    "machine (127.0.0.1 for this machine only, 0.0.0.0 for every interface)"
                ) from None
            names = {"gRPC": ("grpc_port",), "TF Serving gRPC": ("port",)}.get(kind, HTTP_PORT_SETTINGS)
            flags = [f"--{name.replace('_', '-')}" for name in names if getattr(settings, name) == port]
            raise ConfigError(
                f"cannot listen on {host}:{port} ({kind}, {' / '.join(flags) or 'port'}): {exc.strerror}; "
                f"stop whatever uses it or give {flags[0] if flags else 'the flag'} another port"
            ) from None


HTTP_PORT_SETTINGS = ("http_port", "metrics_port", "rest_api_port", "management_port")


def check_tls(settings: ServerSettings) -> None:
    """Read and check the TLS files once, before any worker starts: a missing,
    unreadable or mismatched certificate or key stops the start here."""
    from servekit.server.assembly import secure_ports
    from servekit.server.tls import load as load_tls

    load_tls(settings)
    secure_ports(settings)


async def serve_http(
    app: Any, sockets: list[socket.socket], settings: ServerSettings,
    contexts: list[ssl.SSLContext | None] | None = None, share: Share | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT with servekit's HTTP server, or uvicorn's
    when ``http_server`` is "uvicorn"; either way the worker returns normally,
    so its cleanups (gRPC shutdown, pollers) run. ``contexts``: per socket,
    the TLS context of a TLS listener, else None."""
    loop = asyncio.get_running_loop()
    contexts = contexts or [None] * len(sockets)
    if settings.http_server == "uvicorn":
        # uvicorn has one TLS setting per server: one server for the plain
        # sockets, one for the TLS ones
        plain = [sock for sock, context in zip(sockets, contexts, strict=True) if context is None]
        secure = [sock for sock, context in zip(sockets, contexts, strict=True) if context is not None]
        servers = [_uvicorn_server(app, settings if group is secure else None)
                   for group in (plain, secure) if group]
        groups = [group for group in (plain, secure) if group]

        def stop() -> None:
            for each in servers:
                each.handle_exit_now()

        serving: Awaitable[Any] = asyncio.gather(
            *(each.serve(sockets=group) for each, group in zip(servers, groups, strict=True))
        )
    else:
        from servekit.server.http_server import HttpServer

        server = HttpServer(
            app,
            max_body=settings.max_request_size,
            keep_alive_timeout=settings.keep_alive_seconds,
            body_timeout=settings.body_timeout_seconds,
            drain_timeout=settings.drain_seconds,
            max_connections=settings.max_connections,
            abort_on_close=settings.abort_on_close,
            yield_after_answer=settings.yield_after_answer,
            timestamps=getattr(app, "tracing", None) is not None,  # a trace's receive span
            share=share,
        )
        stop = server.stop
        serving = server.serve(sockets, contexts)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await serving
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        tracer = getattr(app, "tracing", None)
        if tracer is not None:  # export the spans still waiting
            await asyncio.to_thread(tracer.shutdown)


def _uvicorn_server(app: Any, tls: ServerSettings | None = None) -> Any:
    """uvicorn's server for ``app``; with ``tls``, it serves TLS with those
    settings' certificate."""
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
        **_uvicorn_tls(tls),
    )
    return SignalFreeServer(config)


def _uvicorn_tls(settings: ServerSettings | None) -> dict[str, Any]:
    if settings is None or not settings.ssl_certfile:
        return {}
    out: dict[str, Any] = {"ssl_certfile": settings.ssl_certfile, "ssl_keyfile": settings.ssl_keyfile}
    if settings.ssl_ca_certs:
        out.update(ssl_ca_certs=settings.ssl_ca_certs, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return out


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


def serve(settings: ServerSettings, sources: ModelSources, skins: list[Skin]) -> None:
    workers = worker_count(settings)
    configure_threads(settings, workers)
    check_tls(settings)
    check_ports_free(settings)
    if workers <= 1:
        run_loop(Worker(settings, sources, skins).run())
        return
    from servekit.server.metrics import remove_shared, share_across_processes

    made = share_across_processes()
    try:
        Supervisor(settings, sources, skins, workers).run()
    finally:
        remove_shared(made)


@dataclass
class Shared:
    """What the supervisor opens once for all its workers: the HTTP listening
    sockets (in ``listening_ports`` order) and the counts of their connections."""

    sockets: list[socket.socket]
    loads: Loads


@dataclass
class _Pending:
    """A relayed change the worker that made it waits on."""

    origin: socket.socket
    waiting: set[socket.socket]
    failures: dict[int, str] = field(default_factory=dict)


class Supervisor:
    """Forks the workers, replaces those that die, and relays every change:
    journalled, sent to every other worker, and answered to the worker that
    made it once all have applied it."""

    def __init__(self, settings: ServerSettings, sources: ModelSources, skins: list[Skin], workers: int) -> None:
        self.settings = settings
        self.sources = sources
        self.skins = skins
        self.workers = workers
        self.children: dict[int, tuple[int, socket.socket]] = {}  # pid -> (index, control)
        self.journal: list[bytes] = []  # every change, replayed to new workers
        self.pending: dict[str, _Pending] = {}
        self.stopping = False
        self.registry: Registry | None = None
        self.reports = ReportRelay(workers)
        self.shared: Shared | None = None

    def run(self) -> None:
        self.registry = Registry(self.settings, executor=ThreadPoolExecutor(max_workers=2))
        if loads_at_startup(self.settings):
            from servekit.runtimes import survives_fork

            wanted = self.sources.wanted()
            preload = [s for s in wanted if survives_fork(s)]
            per_worker = sorted({s.name for s in wanted if not survives_fork(s)})
            if per_worker and self.workers > 1:
                log.warning(
                    "Model%s %s: TensorFlow/onnxruntime cannot be shared across fork, so each of the %d "
                    "workers loads its own copy (memory and load time times %d); --parallel-workers "
                    "bounds it (each worker holds one copy of every such model)",
                    "s" if len(per_worker) > 1 else "", ", ".join(repr(n) for n in per_worker),
                    self.workers, self.workers,
                )
            asyncio.run(self.registry.apply(preload, show_progress=True))  # a bar on a terminal
        self.registry.executor.shutdown(wait=True)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        if self.settings.http_server != "uvicorn":
            from servekit.server.assembly import listening_ports

            # one queue per HTTP port, shared by the workers (servekit.server.balance)
            sockets = [listen(host, port, reuse_port=False) for host, port in listening_ports(self.settings)]
            self.shared = Shared(sockets, Loads(self.workers))
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
                try:
                    data = sock.recv(1 << 20)
                except OSError:  # a worker killed with unread lines resets its socket
                    data = b""
                if not data:
                    selector.unregister(sock)
                    continue
                for line in readers.setdefault(sock.fileno(), LineReader()).feed(data):
                    if line == b"ready":
                        ready += 1
                        if ready == self.workers:
                            announce(self.settings, self.workers)
                    else:
                        self._on_line(line, sock)
            self.reports.expire()
            for pid, status in self._reap():
                index, control = self.children.pop(pid)
                with contextlib.suppress(KeyError):  # already dropped at end-of-file
                    selector.unregister(control)
                readers.pop(control.fileno(), None)
                self._forget(control)
                self.reports.forget(control)
                control.close()
                if self.shared is not None:
                    self.shared.loads.absent(index)
                if not self.stopping:
                    log.warning("Worker %d (pid %d) died (%s); starting a new one", index, pid, status)
                    control = self._spawn(index)
                    selector.register(control, selectors.EVENT_READ)
                    ready -= 1
        self._shutdown()

    def _on_line(self, line: bytes, source: socket.socket) -> None:
        verb, _, rest = line.partition(b" ")
        if verb == b"change":
            try:
                change = Change.decode(rest)
            except ServekitError as exc:
                log.error("Ignoring a malformed change from a worker: %s", exc.message)
                return
            if change.kind in SUPERSEDING:  # it carries the whole state: the newest is enough
                self.journal = [line for line in self.journal if Change.decode(line).kind != change.kind]
            self.journal.append(rest)
            others = {control for _, control in self.children.values() if control is not source}
            pending = self.pending[change.id] = _Pending(source, set())
            for control in others:
                try:
                    control.sendall(b"apply " + rest + b"\n")
                    pending.waiting.add(control)
                except OSError:  # a dying worker; its replacement replays the journal
                    pass
            self._settle(change.id)
        elif verb == b"applied":
            change_id, _, reason_json = rest.partition(b" ")
            key = change_id.decode("ascii", "replace")
            found = self.pending.get(key)
            if found is None:
                return
            found.waiting.discard(source)
            reason = orjson.loads(reason_json) if reason_json else ""
            if reason:
                found.failures[self._index_of(source)] = str(reason)
            self._settle(key)
        elif verb == b"gather":
            self.reports.ask(source, rest, {control: index for index, control in self.children.values()})
        elif verb == b"report":
            self.reports.answer(source, rest)
        else:
            log.error("Ignoring an unknown control line %r from a worker", verb[:32])

    def _settle(self, change_id: str) -> None:
        """Answer the worker that made a change once no worker still applies it."""
        pending = self.pending[change_id]
        if pending.waiting:
            return
        del self.pending[change_id]
        failures = {str(k): v for k, v in pending.failures.items()}
        with contextlib.suppress(OSError):  # the worker that asked died meanwhile
            pending.origin.sendall(b"done " + change_id.encode() + b" " + orjson.dumps(failures) + b"\n")

    def _forget(self, control: socket.socket) -> None:
        """A worker died: no change waits for it (its replacement replays the journal)."""
        for change_id, pending in list(self.pending.items()):
            if pending.origin is control:
                del self.pending[change_id]
            elif control in pending.waiting:
                pending.waiting.discard(control)
                self._settle(change_id)

    def _index_of(self, control: socket.socket) -> int:
        for index, sock in self.children.values():
            if sock is control:
                return index
        return -1

    def _spawn(self, index: int) -> socket.socket:
        parent, child = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            parent.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            die_with_parent()
            code = 0
            try:
                worker = Worker(
                    self.settings, self.sources, self.skins, self.registry, child, True, index,
                    journal=self.journal, shared=self.shared,
                )
                run_loop(worker.run())
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
        deadline = time.monotonic() + self.settings.drain_seconds + 5
        while self.children and time.monotonic() < deadline:
            for pid, _ in self._reap():
                self.children.pop(pid, None)
            time.sleep(0.05)
        for pid in self.children:
            os.kill(pid, signal.SIGKILL)
        log.info("servekit stopped")
