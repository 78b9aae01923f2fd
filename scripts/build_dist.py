"""Builds the single file: botstate and every dependency, with binary wheels for each carried Python and CPU.

Usage: python scripts/build_dist.py OUTPUT.pyz   (`make dist` runs it with the dev venv's python)

pip installs constraints.txt's packages once per (Python, CPU) of TARGETS, binary wheels only, into
folders of their own; they are merged into one site-packages, where each compiled module's file name
carries its Python and CPU (`orjson.cpython-313-aarch64-linux-gnu.so`), so every interpreter imports
its own. Any other file the targets disagree on stops the build, except the wheel's own metadata.
shiv then packs that folder and botstate's console script into OUTPUT.
"""

import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
# Each CPU's oldest glibc: the newest that one of its wheels needs (psycopg-binary's, on aarch64).
GLIBC = {"x86_64": 17, "aarch64": 28}
TARGETS = tuple((python, machine) for python in PYTHONS for machine in GLIBC)
LEGACY_MANYLINUX = {5: "manylinux1", 12: "manylinux2010", 17: "manylinux2014"}
SHEBANG = "/usr/bin/env python3"
# shiv's bootstrap, with its unpacking of the dependencies (into ~/.shiv or SHIV_ROOT) done
# first, the same way, so that its failure (a HOME this user cannot write, a full disk) is one
# line instead of a traceback; botstate's own errors come after it and are not caught here.
# Before it, an interpreter the file carries no binary modules for is told so in one line.
MAIN = """\
import platform
import sys

import _bootstrap

CARRIED = {carried}
running = (sys.implementation.name, "%d.%d" % sys.version_info[:2], sys.platform, platform.machine())
if (running[0], running[2]) != ("cpython", "linux") or (running[1], running[3]) not in CARRIED:
    sys.exit(
        "botstate: this file carries binary modules for CPython {pythons} on Linux ({machines});"
        " this is %s %s on %s (%s)" % running
    )
where = "SHIV_ROOT or ~/.shiv"
try:
    with _bootstrap.current_zipfile() as archive:
        env = _bootstrap.Environment.from_json(archive.read("environment.json").decode())
        unpacked = _bootstrap.cache_path(archive, env.root, env.build_id)
        where = unpacked.parent
        if not (unpacked / "site-packages").exists() or env.force_extract:
            _bootstrap.extract_site_packages(
                archive, unpacked, env.compile_pyc, env.compile_workers, env.force_extract
            )
except OSError as error:
    sys.exit(
        f"botstate: cannot unpack its dependencies into {where}: {error.strerror or error};"
        " set SHIV_ROOT to a folder this user can write"
    )
_bootstrap.bootstrap()
"""


def pip_install(target, *args):
    """Runs the building Python's pip, installing into the folder target."""
    command = [sys.executable, "-m", "pip", "install", "-qq", "--disable-pip-version-check", "--target", target]
    subprocess.run([*command, *args], check=True, cwd=ROOT)


def install_dependencies(folder, python, machine):
    """Installs requirements.txt with constraints.txt's pins, as wheels for one CPython and CPU."""
    tags = [f"manylinux_2_{minor}" for minor in range(5, GLIBC[machine] + 1)]
    tags += [legacy for minor, legacy in LEGACY_MANYLINUX.items() if minor <= GLIBC[machine]]
    platforms = [arg for tag in tags for arg in ("--platform", f"{tag}_{machine}")]
    abi = "cp" + python.replace(".", "")
    pip_install(
        folder,
        *("--python-version", python, "--implementation", "cp", "--abi", abi, "--only-binary", ":all:"),
        *platforms,
        *("-r", "requirements.txt", "-c", "constraints.txt"),
    )


def merge(source, into):
    """Copies the folder source into into; a file both hold must match, but for a wheel's metadata."""
    for path in sorted(Path(source).rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(source)
        destination = Path(into) / relative
        if not destination.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        elif not filecmp.cmp(path, destination, shallow=False) and not relative.parts[0].endswith(".dist-info"):
            raise SystemExit(f"build_dist: {relative} differs between targets; cannot merge them")


def build(output):
    """Builds the single file at output."""
    with tempfile.TemporaryDirectory(prefix="botstate-dist-") as work:
        site_packages = Path(work) / "site-packages"
        for python, machine in TARGETS:
            print(f"wheels for CPython {python} on {machine}", flush=True)
            folder = Path(work) / f"{python}-{machine}"
            install_dependencies(folder, python, machine)
            merge(folder, site_packages)
        # The dependencies' own scripts start the building Python, and pip (which sqlite-utils
        # asks for, to install its plugins) would be whichever release is newest: botstate needs neither.
        for unneeded in ["bin", "pip", *[path.name for path in site_packages.glob("pip-*.dist-info")]]:
            shutil.rmtree(site_packages / unneeded, ignore_errors=True)
        unpack_botstate(Path(work), site_packages)
        shiv = Path(sys.executable).parent / "shiv"
        subprocess.run(
            [shiv, "--site-packages", site_packages, "--console-script", "botstate", "--output-file", output]
            + ["--python", SHEBANG, "--reproducible", "--compressed"],
            check=True,
        )
    replace_main(output)


def unpack_botstate(work, site_packages):
    """Builds botstate's wheel and unpacks it into site_packages: no script, no record of this checkout's path."""
    # setuptools would ship what an earlier build left in build/, deleted files too.
    for leftover in [ROOT / "build", *ROOT.glob("*.egg-info")]:
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        command = [sys.executable, "-m", "pip", "wheel", "-qq", "--disable-pip-version-check", "--no-deps"]
        subprocess.run([*command, "--wheel-dir", work / "wheel", "."], check=True, cwd=ROOT)
    finally:
        for leftover in [ROOT / "build", *ROOT.glob("*.egg-info")]:
            shutil.rmtree(leftover, ignore_errors=True)
    (wheel,) = (work / "wheel").glob("botstate-*.whl")
    with zipfile.ZipFile(wheel) as unpacked:
        unpacked.extractall(site_packages)


def main_py():
    """MAIN, naming the Pythons and CPUs this build carries."""
    return (
        MAIN.replace("{carried}", repr(tuple(sorted(TARGETS))))
        .replace("{pythons}", f"{PYTHONS[0]} to {PYTHONS[-1]}")
        .replace("{machines}", ", ".join(GLIBC))
    )


def replace_main(output):
    """Rewrites the zipapp at output with MAIN as its __main__.py, keeping every other entry as it is."""
    with zipfile.ZipFile(output) as built:
        entries = [(info, built.read(info)) for info in built.infolist()]
    with open(f"{output}.main", "wb") as rewritten:
        rewritten.write(f"#!{SHEBANG}\n".encode())
        with zipfile.ZipFile(rewritten, "w") as archive:
            for info, data in entries:
                archive.writestr(info, main_py() if info.filename == "__main__.py" else data)
    os.chmod(f"{output}.main", 0o755)
    os.replace(f"{output}.main", output)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: build_dist.py OUTPUT.pyz")
    build(sys.argv[1])
