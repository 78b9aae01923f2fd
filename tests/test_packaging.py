"""The package pyproject.toml describes holds every module of the checkout, its pinned dependencies and the command."""

import tomllib
from pathlib import Path

from conftest import ROOT

import botstate
from version import VERSION

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_holds_every_top_level_module_and_package():
    setuptools = PROJECT["tool"]["setuptools"]
    assert sorted(setuptools["py-modules"]) == sorted(path.stem for path in ROOT.glob("*.py"))
    assert sorted(setuptools["packages"]) == sorted(path.parent.name for path in ROOT.glob("*/__init__.py"))


def test_the_version_and_dependencies_come_from_their_one_place():
    dynamic = PROJECT["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "version.VERSION"} and VERSION.startswith("0.")
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    requirements = [line for line in Path(ROOT / "requirements.txt").read_text().splitlines() if line[:1].isalpha()]
    assert requirements and all("==" in line for line in requirements)  # pinned


def test_the_command_is_botstates_main():
    assert PROJECT["project"]["scripts"] == {"botstate": "botstate:main"}
    assert botstate.main.name == "botstate"
