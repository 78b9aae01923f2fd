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
    assert len(commands) == 18
    for name, command in commands.items():
        assert f"`flask {name}" in README, name
        assert command.help, name
        assert "--json" in [opt for param in command.params for opt in param.opts], name


def test_every_setting_is_in_readme():
    for key in config.DEFAULTS:
        assert f"`{config.ENV_PREFIX}_{key}`" in README, key


def test_every_validation_message_is_in_readme():
    import schemas

    messages = (
        schemas.STATES_NOT_ARRAY,
        schemas.STATES_EMPTY,
        schemas.STATES_TOO_MANY.format(max=1000),
        f"states[i] {schemas.ITEM_NOT_OBJECT}",
        f"states[i].accountId {schemas.FIELD_REQUIRED_STRING}",
        f"states[i].accountId {schemas.FIELD_NOT_UUID}",
        f"states[i].state {schemas.STATE_REQUIRED_OBJECT}",
        f"states[i].state {schemas.STATE_TOO_DEEP.format(max_depth=100)}",
        f"states[i].expectedVersion {schemas.VERSION_INVALID.format(max=schemas.MAX_VERSION)}",
        f"limit {schemas.LIMIT_INVALID.format(min=1, max=1000)}",
        f"updatedSince {schemas.TIMESTAMP_INVALID}",
        f"cursor {schemas.CURSOR_INVALID}",
        schemas.INVALID_SLUG,
    )
    for message in messages:
        assert message in README, message


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples_work_in_order(live_server, bot, storage):
    storage.add_account(ACCOUNT_0, None)
    storage.add_ticker("AAPL", TICKER_AAPL)
    section = re.search(r"<!-- curl-examples -->(.*?)<!-- /curl-examples -->", README, re.S).group(1)
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    answers = []
    for block in blocks:
        result = subprocess.run(
            ["bash", "-c", block.replace("http://127.0.0.1:8080", live_server.url)],
            env=dict(os.environ, BOT_KEY=bot["apiKey"]),
            capture_output=True, text=True, timeout=30,
        )
        answers.append(json.loads(result.stdout))
    written, merged, read, page, deleted = answers
    assert written["summary"] == {"total": 1, "succeeded": 1, "failed": 0}
    assert written["results"][0]["data"]["state"] == {"position": "long", "entryPrice": 145.0, "stopLoss": 140.0}
    assert merged["results"][0]["data"]["state"] == {"position": "long", "entryPrice": 145.0, "endOfDayPrice": 150.25}
    assert read["data"]["version"] == 2
    assert [row["version"] for row in page["data"]] == [2] and page["nextCursor"] is None
    assert deleted["data"]["state"] == merged["results"][0]["data"]["state"]
    assert storage.count_states() == 0
