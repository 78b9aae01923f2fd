"""deploy/: the nginx site in front of a real server over TLS, and the systemd unit's settings."""

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import ROOT, start_server, stop_server
from spec_data import item

import envfile
from version import VERSION

# `make test-deploy` installs what these need and sets DEPLOY_CHECK, so that there they run, or fail.
REQUIRED = bool(os.environ.get("DEPLOY_CHECK"))


def needs(*commands):
    """Skips a test when a command it runs is not installed, unless `make test-deploy` runs it."""
    missing = [command for command in commands if shutil.which(command) is None]
    return pytest.mark.skipif(
        bool(missing) and not REQUIRED, reason=f"{', '.join(missing)} not installed (`make test-deploy` installs them)"
    )


@pytest.fixture
def proxied(tmp_path, storage, bot, registered):
    """botstate behind deploy/nginx.conf, on free loopback ports, with a self-signed certificate."""
    process, url, _ = start_server(storage.path)
    port = url.rsplit(":", 1)[1]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=botstate.example.com",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            tmp_path / "privkey.pem",
            "-out",
            tmp_path / "fullchain.pem",
        ],
        check=True,
        capture_output=True,
    )
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("listen 443 ssl;", "listen 127.0.0.1:0 ssl;").replace("/etc/ssl/botstate", str(tmp_path))
    site = site.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    tls_port = _free_port()
    site = site.replace("listen 127.0.0.1:0 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
    (tmp_path / "nginx.conf").write_text(
        # As root, nginx's workers would run as nobody, who cannot write the body's temp file here.
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log; events {{}}\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}/body;"
        f" proxy_temp_path {tmp_path}/proxy;\n{site}\n}}\n"
    )
    subprocess.run(["nginx", "-c", str(tmp_path / "nginx.conf")], check=True, capture_output=True)
    try:
        yield f"https://127.0.0.1:{tls_port}", bot, str(tmp_path / "fullchain.pem")
    finally:
        subprocess.run(["nginx", "-c", str(tmp_path / "nginx.conf"), "-s", "stop"], capture_output=True)
        stop_server(process)


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.sqlite_only("the proxy does not care which database serves")
@needs("nginx", "openssl")
def test_the_nginx_site_proxies_tls_and_lets_botstate_answer_an_oversized_body(proxied):
    base, bot, certificate = proxied
    headers = {"x-api-key": bot["apiKey"]}
    assert requests.get(f"{base}/healthz", verify=certificate, timeout=10).json() == {
        "status": "ok",
        "version": VERSION,
    }
    written = requests.post(
        f"{base}/api/bots/my-bot/state", json={"states": [item()]}, headers=headers, verify=certificate, timeout=10
    )
    assert written.status_code == 200 and written.json()["summary"]["succeeded"] == 1
    too_big = requests.post(
        f"{base}/api/bots/my-bot/state",
        data=b"x" * (10 * 1024 * 1024 + 1),
        headers=headers,
        verify=certificate,
        timeout=30,
    )
    assert (too_big.status_code, too_big.json()["code"]) == (
        413,
        "PAYLOAD_TOO_LARGE",
    )  # botstate's JSON, not nginx's page


def test_the_systemd_unit_serves_as_its_own_user_from_its_environment_file():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "deploy" / "botstate.service")
    service = unit["Service"]
    assert (service["User"], service["EnvironmentFile"], service["Restart"]) == (
        "botstate",
        "/etc/botstate.env",
        "on-failure",
    )
    assert service["ExecStart"].endswith("botstate serve") and "init-db" in service["ExecStartPre"]
    assert service["ReadWritePaths"] == "/var/lib/botstate"
    assignments, warnings = envfile.parse((ROOT / "deploy" / "botstate.env").read_text())
    environment = dict(assignments)
    assert warnings == []  # read as systemd and `botstate --env-file` read it
    assert environment["BOTSTATE_HOST"] == "127.0.0.1"  # loopback: the proxy faces the network
    assert environment["BOTSTATE_DATABASE"].startswith(service["ReadWritePaths"] + "/")


@needs("systemd-analyze")
def test_systemd_finds_nothing_wrong_with_the_unit(tmp_path):
    # The single file when `make test-deploy` built one, else the venv's botstate, in place of /usr/local/bin's.
    botstate = os.environ.get("DIST_CHECK") or str(Path(sys.executable).parent / "botstate")
    unit = (ROOT / "deploy" / "botstate.service").read_text()
    assert "ExecStart=/usr/local/bin/botstate serve" in unit
    (tmp_path / "botstate.service").write_text(unit.replace("/usr/local/bin/botstate", botstate))
    checked = subprocess.run(
        ["systemd-analyze", "verify", tmp_path / "botstate.service"], capture_output=True, text=True, timeout=60
    )
    assert (checked.returncode, checked.stderr) == (0, "")
