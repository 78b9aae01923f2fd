"""The docs (README.md and docs/*.md) against the code: commands, settings, messages, links, and examples that run."""

import collections
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import ROOT, botstate_env

import botstate
import config

README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCED = re.compile(r"^ *```.*?^ *```[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(<?([^)\s>]+)>?(?: \"[^\"]*\")?\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]: *<?([^\s>]+)", re.M)
CURL_EXAMPLES = re.compile(r"<!-- curl-examples -->(.*?)<!-- /curl-examples -->", re.S)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def doc_files():
    """README.md and every docs/*.md."""
    return [README, *sorted(DOCS.glob("*.md"))]


def all_docs():
    """The text of README.md and every docs/*.md, together."""
    return "\n".join(path.read_text() for path in doc_files())


def page(name):
    """The text of one page of docs/."""
    return (DOCS / name).read_text()


def all_commands(group=None):
    """(name, command) of every command under `botstate`, a group's as `group command`."""
    group = group or botstate.main
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            for sub_name, sub in command.commands.items():
                yield f"{name} {sub_name}", sub
        else:
            yield name, command


def code_in_docs():
    """The code of README.md and docs/*.md: fenced blocks and inline code spans, together."""
    text = all_docs()
    return "\n".join(FENCED.findall(text) + INLINE_CODE.findall(text))


def anchors(text):
    """The #anchors GitHub gives the headings of a Markdown text (a repeated one gets -1, -2, ...)."""
    seen = collections.Counter()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", FENCED.sub("", text), re.M):
        text_only = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
        slug = re.sub(r"[^\w\- ]", "", text_only.lower()).replace(" ", "-")
        yield f"{slug}-{seen[slug]}" if seen[slug] else slug
        seen[slug] += 1


def relative_links(path):
    """(link as written, file it points to, anchor or "") of every link of a Markdown file that is not a URL."""
    prose = INLINE_CODE.sub("", FENCED.sub("", path.read_text()))
    for target in LINK.findall(prose) + REFERENCE.findall(prose):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue
        file = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        yield target, file, unquote(parts.fragment)


def test_readme_starts_with_the_two_commands():
    first_block = README.read_text().split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "run"], ["make", "test"]]


def test_every_admin_command_is_in_the_cli_page_with_help():
    commands = {name: command for name, command in all_commands() if name != "serve"}
    table = re.findall(r"^\| `botstate ((?:[a-z][a-z-]* ?)+)", page("cli.md"), re.M)
    assert commands and sorted(commands) == sorted(row.strip() for row in table)
    for name, command in commands.items():
        assert command.help, name
        assert "--json" in [opt for param in command.params for opt in param.opts], name


def test_every_botstate_command_the_docs_name_exists():
    commands = dict(all_commands())
    groups = {name.split()[0] for name in commands if " " in name}
    # `botstate ...` as a command: not the user, group or database named botstate (`-u botstate`, `-O botstate
    # botstate`), nor the server's own lines (`botstate listening on ...`, `botstate stopped`).
    command = (
        r"(?<!-u )(?<!-g )(?<!-O )(?<!-O botstate )\bbotstate (?:--env-file \S+ )?"
        r"(?!listening|stopped)([a-z][a-z-]*)(?: ([a-z][a-z-]*))?"
    )
    named = re.findall(command, code_in_docs())
    assert named
    for first, second in named:
        if first in groups:
            assert not second or f"{first} {second}" in commands, f"botstate {first} {second}"
        else:
            assert first in commands, f"botstate {first}"


def test_every_setting_is_in_the_configuration_page():
    settings = {f"{config.ENV_PREFIX}_{key}" for key in config.DEFAULTS}
    table = re.findall(rf"^\| `({config.ENV_PREFIX}_\w+)` \|", page("configuration.md"), re.M)
    assert sorted(table) == sorted(settings)
    named = set(re.findall(rf"\b{config.ENV_PREFIX}_[A-Z][A-Z0-9_]*", all_docs()))
    assert named <= settings, sorted(named - settings)


def test_every_validation_message_is_in_the_api_page():
    import idempotency
    import schemas

    api = page("api.md")
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
        idempotency.KEY_TOO_LONG,
        idempotency.KEY_EMPTY,
        idempotency.KEY_NOT_ASCII,
        idempotency.KEY_REUSED,
        idempotency.KEY_IN_PROGRESS,
    )
    for message in messages:
        assert message in api, message


@pytest.mark.parametrize("path", doc_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    for target, file, anchor in relative_links(path):
        assert file.exists(), f"{target}: no such file"
        if anchor and file.suffix == ".md":
            assert anchor in set(anchors(file.read_text())), f"{target}: no such heading"


def test_every_docs_page_is_linked_from_readme():
    pages = set(DOCS.glob("*.md"))
    linked = {file for _, file, _ in relative_links(README)}
    assert pages and pages <= linked, sorted(path.name for path in pages - linked)


# The pages whose one curl-examples section a test runs: README's below, the admin API's in test_admin_docs.py.
CURL_EXAMPLE_PAGES = (README, DOCS / "admin-api.md")


def test_every_curl_example_is_one_a_test_runs():
    """Only the curl-examples sections of CURL_EXAMPLE_PAGES are run, so no curl example may stand anywhere else."""
    for path in doc_files():
        text = path.read_text()
        if path in CURL_EXAMPLE_PAGES:
            before, _, after = CURL_EXAMPLES.split(text)  # exactly one section
            text = before + after
        code = "\n".join(FENCED.findall(text))
        assert not re.search(r"^\s*curl\b", code, re.M), path.name


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_first_bot_works_in_order(live_server, database, storage):
    walkthrough = README.read_text().split("## First bot in a minute", 1)[1]
    setup, section = CURL_EXAMPLES.search(walkthrough).group(0, 1)
    [commands] = BASH_BLOCK.findall(walkthrough.split(setup, 1)[0])
    flask = str(Path(sys.executable).with_name("flask"))
    created = subprocess.run(
        ["bash", "-e", "-c", commands.replace(".venv/bin/flask", flask)],
        cwd=ROOT,
        env=botstate_env(**database),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    bot_key = re.search(r"\bbsk_\S+", created.stdout).group()
    answers = []
    for block in BASH_BLOCK.findall(section):
        result = subprocess.run(
            ["bash", "-c", block.replace("http://127.0.0.1:8080", live_server.url)],
            env=dict(os.environ, BOT_KEY=bot_key),
            capture_output=True,
            text=True,
            timeout=30,
        )
        answers.append(json.loads(result.stdout))
    written, merged, read, listed, deleted = answers
    assert written["summary"] == {"total": 1, "succeeded": 1, "failed": 0}
    assert written["results"][0]["data"]["state"] == {"position": "long", "entryPrice": 145.0, "stopLoss": 140.0}
    assert merged["results"][0]["data"]["state"] == {"position": "long", "entryPrice": 145.0, "endOfDayPrice": 150.25}
    assert read["data"]["version"] == 2
    assert [row["version"] for row in listed["data"]] == [2] and listed["nextCursor"] is None
    assert deleted["data"]["state"] == merged["results"][0]["data"]["state"]
    assert storage.count_states() == 0
