import json
import os
import re
import shutil
import subprocess

import pytest

import config
from conftest import ROOT
from spec_data import ACCOUNT_0, TICKER_AAPL

README = (ROOT / "README.md").read_text()


def all_commands(app):
    for name, command in app.cli.commands.items():
        if hasattr(command, "commands"):
            for sub_name, sub in command.commands.items():
                yield f"{name} {sub_name}", sub
        elif name not in ("run", "shell", "routes"):
            yield name, command


def test_readme_starts_with_the_two_commands():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "run"], ["make", "test"]]


def test_every_cli_command_is_in_readme_with_help(app):
    commands = dict(all_commands(app))
    assert len(commands) == 11
    for name, command in commands.items():
        assert f"`flask {name}" in README, name
        assert command.help, name
        assert "--json" in [opt for param in command.params for opt in param.opts], name


def test_every_setting_is_in_readme():
    for key in config.DEFAULTS:
        assert f"`{config.ENV_PREFIX}_{key}`" in README, key


def test_every_validation_message_is_in_readme():
    import schemas

    for name in ("STATES_NOT_ARRAY", "STATES_EMPTY", "FIELD_REQUIRED_STRING", "FIELD_NOT_UUID", "STATE_REQUIRED_OBJECT"):
        assert getattr(schemas, name).split("{")[0] in README, name


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_example_works(live_server, bot, storage):
    storage.add_account(ACCOUNT_0, None)
    storage.add_ticker("AAPL", TICKER_AAPL)
    block = re.search(r"<!-- curl-example -->\n```bash\n(.*?)```", README, re.S).group(1)
    script = block.replace("http://127.0.0.1:8080", live_server.url)
    result = subprocess.run(
        ["bash", "-c", script], env=dict(os.environ, BOTSTATE_KEY=bot["apiKey"]),
        capture_output=True, text=True, timeout=30,
    )
    body = json.loads(result.stdout)
    assert body["summary"] == {"total": 1, "succeeded": 1, "failed": 0}
    assert body["results"][0]["data"]["state"] == {"position": "long", "entryPrice": 145.0, "stopLoss": 140.0}
