"""Every subcommand says what it does; every flag of every subcommand has a help
line showing its default (server settings also their settings.json key and
environment variable); server flags are grouped by purpose and each command
shows only the groups it uses."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from servekit.cli import COMMANDS, build_parser
from servekit.config import ServerSettings
from servekit.server_flags import GROUPS, HelpFormatter


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def visible_actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """(command path, action) of every flag and argument a user sees, recursing
    into nested subcommands (``assets push``)."""
    out: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        out.append((parser.prog, action))
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                out.extend(visible_actions(child))
    return out


def test_servekit_help_says_a_word_on_each_subcommand() -> None:
    text = build_parser().format_help()
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    summaries = {choice.dest: choice.help for choice in sub._choices_actions}
    assert set(summaries) == set(COMMANDS)
    for name, summary in summaries.items():
        assert summary and len(summary) > 15, name
        assert summary.split()[0] in text
    assert "`servekit COMMAND --help` for its flags" in text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_has_help_and_shows_its_default(command: str) -> None:
    parser = subcommands()[command]
    actions = visible_actions(parser)
    assert actions
    for prog, action in actions:
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{prog} {name} has no help"
        shown = HelpFormatter(prog)._get_help_string(action) or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in shown, f"{prog} {name} does not show its default"


@pytest.mark.parametrize("command", ["serve", "start", "microservice"])
def test_server_flags_name_their_default_settings_key_and_variable(command: str) -> None:
    parser = subcommands()[command]
    # the server settings' groups (a command may replace some with its own flags, as
    # microservice does with seldon-core-microservice's --debug)
    flags = {a.dest: a for group in parser._action_groups if group.title in GROUPS
             for a in group._group_actions if a.help != argparse.SUPPRESS and a.dest in ServerSettings.model_fields}
    assert flags
    for name, action in flags.items():
        assert action.help is not None
        assert "(default: " in action.help, name
        assert f"settings.json: {name}; env: SERVEKIT_{name.upper()})" in action.help, name


def test_every_setting_is_in_exactly_one_group() -> None:
    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(ServerSettings.model_fields)


def test_serve_groups_its_flags_by_purpose() -> None:
    text = subcommands()["serve"].format_help()
    positions = [text.index(f"\n{title}:\n") for title in GROUPS]
    assert positions == sorted(positions)
    torchserve = text[text.index("\nTorchServe ("):text.index("\nTF Serving (")]
    assert "--model-store" in torchserve and "--models" in torchserve and "--start" in torchserve
    assert "--http-port" not in torchserve


def test_serve_explains_its_ports_and_the_docker_variables() -> None:
    text = " ".join(subcommands()["serve"].format_help().split())
    assert "--http-port serves V2 REST, /predict, Seldon and TorchServe's inference API" in text
    assert "--rest-api-port TF Serving's REST API; --port TF Serving's gRPC API" in text
    assert "MODEL_NAME serves the versions in MODEL_BASE_PATH/MODEL_NAME (MODEL_BASE_PATH defaults to /models" in text
    assert "--parallel-workers N worker processes sharing the ports" in text
    assert "(default: one per core; settings.json: parallel_workers; env: SERVEKIT_PARALLEL_WORKERS)" in text


def test_microservice_shows_only_its_own_flags() -> None:
    microservice = {o for _, a in visible_actions(subcommands()["microservice"]) for o in a.option_strings}
    serve = {o for _, a in visible_actions(subcommands()["serve"]) for o in a.option_strings}
    for foreign in ("--model-store", "--ts-config", "--models", "--rest-api-port", "--port", "--model-base-path",
                    "--model-config-file", "--management-port", "--model-repository-root"):
        assert foreign not in microservice and foreign in serve
    assert {"--http-port", "--grpc-port", "--parallel-workers", "--debug", "--service-type"} <= microservice


def test_the_real_command_prints_help() -> None:
    done = subprocess.run([sys.executable, "-m", "servekit", "serve", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == ""
    assert "network and ports:" in done.stdout and "security:" in done.stdout
    assert "--ssl-certfile" in done.stdout
