"""The README's examples run against a real server; the package is typed, documented and small."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .botstate_server import Server

CLIENT = Path(__file__).resolve().parents[1]
PACKAGE = CLIENT / "botstate_client"
BOT = CLIENT / "examples" / "bot.py"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_the_readme_examples_run(server: Server) -> None:
    bot = server.new_bot("my-trading-bot")
    blocks = PYTHON_BLOCK.findall((CLIENT / "README.md").read_text())
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "readme"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:  # one session, in order, as a reader would type them
            code = block.replace("https://api.example.com", server.url).replace("your-api-key", bot.key)
            exec(compile(code, "README.md", "exec"), namespace)
    printed = out.getvalue()
    assert "Updated 2 of 2 states\n" in printed and "failed:" not in printed
    assert "Updated 2 positions\n" in printed
    assert "403 Invalid API key for this bot\n" in printed


def test_the_package_the_example_bot_and_the_readme_examples_pass_mypy_strict(tmp_path: Path) -> None:
    readme = tmp_path / "readme_examples.py"  # one session, as test_the_readme_examples_run runs them
    readme.write_text("\n".join(PYTHON_BLOCK.findall((CLIENT / "README.md").read_text())))
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    command = [mypy] if mypy else [sys.executable, "-m", "mypy"]
    done = subprocess.run(
        [
            *command,
            "--config-file",
            str(CLIENT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path),
            str(PACKAGE),
            str(BOT),
            str(readme),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Success: no issues found"), done.stdout


def test_every_public_function_has_a_one_line_docstring_and_modules_stay_small() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        source = path.read_text()
        assert len(source.splitlines()) < 400, path.name
        tree = ast.parse(source)
        assert ast.get_docstring(tree), f"{path.name} has no docstring"
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not node.name.startswith(
                "_"
            ):
                docstring = ast.get_docstring(node)
                assert docstring, f"{path.name}: {node.name} has no docstring"
                assert "\n" not in docstring.split("\n\n")[0].strip(), f"{path.name}: {node.name}'s first line wraps"


def test_the_package_declares_its_typing_and_dependency() -> None:
    pyproject = (CLIENT / "pyproject.toml").read_text()
    assert (PACKAGE / "py.typed").exists() and 'botstate_client = ["py.typed"]' in pyproject
    assert 'name = "botstate-client"' in pyproject and '"httpx>=0.27,<1"' in pyproject
