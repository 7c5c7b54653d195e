"""README.md runs as written: every ```bash, ```sh, ```console and ```python
block, in order, in a fresh copy of the repository.

- **Which blocks.** Fenced blocks whose info string is ``bash``, ``sh``,
  ``console`` or ``python``; untagged blocks are output and file trees, not
  run. ``<!-- readme-test: skip (reason) -->`` on the line before a block skips
  it; the reason is required and the test fails on a marker without one.
- **Where.** The repository's tracked files (what a clone has, with this
  working tree's edits) are copied to a temporary folder. Its ``.venv`` is a
  folder of links to the real virtualenv's entries with a fresh install stamp,
  so ``make install`` and ``make serve`` find it built and install nothing
  (servekit is installed editable, so the code that runs is this working
  tree's ``src``). ``make serve`` trains the example models in the copy once
  (a few seconds); nothing is downloaded.
  ``HOME`` and ``TMPDIR`` are temporary folders too (the asset cache, the
  TorchServe pid file), so nothing outside the copy is read or written.
- **How.** One ``bash`` (``set -eo pipefail``) runs every shell block in turn,
  as a reader's terminal would: ``cd``, ``export`` and ``source
  .venv/bin/activate`` carry over. Python blocks run with that shell's
  ``python`` in its current folder. ``curl`` is ``curl --fail-with-body``, so a
  README call that gets an HTTP error fails the test. In ``console`` blocks a
  line starting ``$ `` is a command and the lines up to the next one are its
  output, compared line by line, where ``…`` stands for any text.
- **Servers.** A command that keeps serving (``make serve``, ``servekit
  serve|start|microservice``) starts in the background in its own session;
  the test waits for its ``servekit ready`` line, then runs the next blocks
  against it. A reader stops one server before starting the next, so a new
  server (also ``servekit --start``, which detaches itself) first stops the
  ones started before it. Servers run one worker (``SERVEKIT_PARALLEL_WORKERS=1``):
  the machine is shared and nothing here depends on the worker count.
- **Ports.** The README names fixed ports (8080, 8081, …). Using them only
  when free would make the test fail or skip whenever anything else on a
  shared machine (or a second run of this test) listens there. Instead every
  README port is replaced, in the block text, by a port that
  ``servers.free_port`` hands out (free, never the same twice in a session,
  below the kernel's ephemeral range), and the servers' defaults get the same
  ports through ``SERVEKIT_*`` variables: ``http_port`` 8080, ``grpc_port``
  8081 (7070 for a TorchServe-mode command, whose management API takes 8081),
  ``metrics_port`` 8082, ``management_port`` 8081, and for TF Serving-mode
  commands ``rest_api_port`` 8501 and ``port`` 8500.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from servers import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUN = {"bash", "sh", "console", "python"}
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->")
FENCE = re.compile(r"^```(?P<info>[^`\s]*)\s*$")
PORTS = (8080, 8081, 8082, 7070, 8500, 8501, 9000, 9001)
SERVER = re.compile(r"^(?:\w+=\S*\s+)*(?:make serve|servekit (?:serve|start|microservice))\b")
TORCHSERVE_MODE = re.compile(r"--start\b|--model-store\b|--ts-config\b")
TFSERVING_MODE = re.compile(r"--model_name\b|--model_config_file\b|--rest_api_port\b|\bMODEL_NAME=")
COMMAND_TIMEOUT = 240.0
READY_TIMEOUT = 180.0


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    info: str
    text: str
    skip: str | None = None  # the marker's reason


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks in order, with the skip marker of each."""
    found: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.search(previous)
        skip = None
        if marker:
            skip = (marker.group("reason") or "").strip()
            assert skip, f"README.md:{start + 1}: a readme-test skip marker needs its reason: (reason)"
        found.append(Block(start + 1, match.group("info").lower(), "\n".join(body) + "\n", skip))
    return found


def commands(text: str) -> list[str]:
    """Logical lines: backslash continuations joined, heredoc bodies kept with their command."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        command = lines[i]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command += "\n" + lines[i]
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", command)
        if heredoc:
            end = heredoc.group(1)
            while i + 1 < len(lines):
                i += 1
                command += "\n" + lines[i]
                if lines[i].strip() == end:
                    break
        out.append(command)
        i += 1
    return out


def console(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of a console block."""
    out: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        assert lines[i].startswith("$ "), f"console block line without '$ ': {lines[i]!r}"
        command = lines[i][2:]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command += "\n" + lines[i]
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        out.append((command, expected))
    return out


def matches(expected: list[str], got: str) -> bool:
    lines = got.rstrip("\n").splitlines()
    if len(lines) != len(expected):
        return False
    for want, line in zip(expected, lines, strict=True):
        pattern = ".*".join(re.escape(part) for part in want.rstrip().split("…"))
        if not re.fullmatch(pattern, line.rstrip()):
            return False
    return True


@dataclass
class Shell:
    """One bash fed command files; its state carries over as in a terminal."""

    folder: Path
    work: Path
    env: dict[str, str]
    ports: dict[int, int]
    proc: subprocess.Popen[bytes] | None = None
    servers: list[tuple[int, Path]] = field(default_factory=list)
    count: int = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd=self.folder, env=self.env, start_new_session=True,
        )
        self.send("set -eo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n")

    def send(self, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def run(self, script: str, where: str) -> str:
        """Run ``script`` in the shell; its output, or a failure naming ``where``."""
        self.count += 1
        n = self.count
        script_file, out, rc = (self.work / f"{n}.sh", self.work / f"{n}.out", self.work / f"{n}.rc")
        script_file.write_text(script + "\n")
        self.send(f"source {shlex.quote(str(script_file))} > {out} 2>&1 < /dev/null; echo $? > {rc}\n")
        deadline = time.monotonic() + COMMAND_TIMEOUT
        assert self.proc is not None
        while not rc.exists() or not rc.read_text().strip():
            if self.proc.poll() is not None:
                pytest.fail(f"{where} failed:\n$ {script}\n{_read(out)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{where} did not finish in {COMMAND_TIMEOUT:.0f} s:\n$ {script}\n{_read(out)}")
            time.sleep(0.05)
        if rc.read_text().strip() != "0":
            pytest.fail(f"{where} exited with {rc.read_text().strip()}:\n$ {script}\n{_read(out)}")
        return _read(out)

    def serve(self, command: str, where: str) -> None:
        """Start a server command in the background and wait until it is ready."""
        self.stop_servers()
        self.count += 1
        log, pid_file = self.work / f"{self.count}.server.log", self.work / f"{self.count}.pid"
        self.run(f"{self.mode_env(command)}\nsetsid bash -c {shlex.quote(command)} > {log} 2>&1 < /dev/null &\n"
                 f"echo $! > {pid_file}\n{self.mode_env('')}", where)
        pid = int(pid_file.read_text())
        self.servers.append((pid, log))
        deadline = time.monotonic() + READY_TIMEOUT
        while "servekit ready" not in _read(log):
            try:
                os.kill(pid, 0)
                gone = False
            except ProcessLookupError:
                gone = True
            if gone or time.monotonic() > deadline:
                state = "exited" if gone else f"was not ready in {READY_TIMEOUT:.0f} s"
                pytest.fail(f"{where}: the server {state}:\n$ {command}\n{_read(log)}")
            time.sleep(0.1)

    def mode_env(self, command: str) -> str:
        """Exports that give a command's mode its ports (see the module's docstring)."""
        p = self.ports
        grpc = p[7070] if TORCHSERVE_MODE.search(command) else p[8081]
        lines = [f"export SERVEKIT_GRPC_PORT={grpc}"]
        if TFSERVING_MODE.search(command):
            lines.append(f"export SERVEKIT_REST_API_PORT={p[8501]} SERVEKIT_PORT={p[8500]}")
        else:
            lines.append("unset SERVEKIT_REST_API_PORT SERVEKIT_PORT")
        return "\n".join(lines)

    def stop_servers(self) -> None:
        for pid, _ in self.servers:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
        self.servers.clear()

    def close(self) -> None:
        self.stop_servers()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def fresh_copy(dest: Path) -> None:
    """The tracked files (a clone's content, with the working tree's edits) and a linked .venv."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in listed.decode().split("\0"):
        source = ROOT / name
        if not name or not source.is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    venv = dest / ".venv"
    venv.mkdir()
    for entry in (ROOT / ".venv").iterdir():
        if entry.name != ".installed-stamp":
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed-stamp").touch()  # newer than every copied file: make finds it installed


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    base = tmp_path_factory.mktemp("readme")
    folder, work, home, tmp = (base / "servekit", base / "work", base / "home", base / "tmp")
    for path in (folder, work, home, tmp):
        path.mkdir()
    fresh_copy(folder)
    ports = {port: free_port() for port in PORTS}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SERVEKIT_", "MODELKIT_", "PYTEST_", "MODEL_", "VIRTUAL_ENV")) and k != "PYTHONPATH"}
    env.update({
        "HOME": str(home), "TMPDIR": str(tmp),
        "PATH": f"{folder / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        "SERVEKIT_HTTP_PORT": str(ports[8080]), "SERVEKIT_METRICS_PORT": str(ports[8082]),
        "SERVEKIT_MANAGEMENT_PORT": str(ports[8081]), "SERVEKIT_GRPC_PORT": str(ports[8081]),
        "SERVEKIT_PARALLEL_WORKERS": "1", "SERVEKIT_PID_FILE": str(tmp / "servekit.pid"),
        "MAKEFLAGS": "",
    })
    sh = Shell(folder, work, env, ports)
    sh.start()
    try:
        yield sh
    finally:
        with contextlib.suppress(BaseException):  # the shell may be gone after a failure
            sh.run("servekit --stop > /dev/null || true", "cleanup")
        sh.close()


def with_ports(text: str, ports: dict[int, int]) -> str:
    return re.sub(r"(?<![\d.])(" + "|".join(map(str, ports)) + r")(?!\d)", lambda m: str(ports[int(m.group(1))]), text)


README_BLOCKS = blocks(README.read_text())


def test_readme_has_runnable_blocks_and_explained_skips() -> None:
    runnable = [b for b in README_BLOCKS if b.info in RUN]
    assert len([b for b in runnable if b.skip is None]) >= 10
    for block in README_BLOCKS:
        assert block.skip is None or block.info in RUN, f"README.md:{block.line}: a skip marker on a block never run"
        if block.info not in RUN:  # output and file trees only: commands belong in a block that runs
            for line in block.text.splitlines():
                assert not re.match(r"(\$ |servekit |curl |python |make |pip )", line), (
                    f"README.md:{block.line}: {line!r} is a command in a block that is not run; "
                    "tag the block bash, console or python"
                )


def test_readme_runs_as_written(shell: Shell) -> None:
    ran = 0
    for block in README_BLOCKS:
        if block.info not in RUN or block.skip is not None:
            continue
        where = f"README.md:{block.line} ({block.info})"
        text = with_ports(block.text, shell.ports)
        if block.info == "python":
            script = shell.work / f"block_{block.line}.py"
            script.write_text(text)
            shell.run(f"python {shlex.quote(str(script))}", where)
        elif block.info == "console":
            for command, expected in console(text):
                got = shell.run(command, where)
                assert matches(expected, got), f"{where}: $ {command}\nexpected:\n" + "\n".join(expected) + f"\ngot:\n{got}"
        else:
            pending: list[str] = []
            for command in commands(text):
                starts_detached = "servekit" in command and TORCHSERVE_MODE.search(command.split("#")[0])
                if SERVER.match(command) or starts_detached:
                    if pending:
                        shell.run("\n".join(pending), where)
                        pending = []
                    if SERVER.match(command):
                        shell.serve(command, where)
                    else:  # servekit --start: detaches itself once ready
                        shell.stop_servers()
                        shell.run(f"{shell.mode_env(command)}\n{command}\n{shell.mode_env('')}", where)
                    continue
                pending.append(command)
            if pending:
                shell.run("\n".join(pending), where)
        ran += 1
    assert ran >= 10
