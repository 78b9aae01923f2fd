"""Settings: defaults, overridden by BOTSTATE_* environment variables, then checked."""

import os

ENV_PREFIX = "BOTSTATE"

# Each setting: default value and the type it must have. DATABASE defaults to
# the app's instance folder, so it is filled in by the app factory.
DEFAULTS = {
    "HOST": "127.0.0.1",
    "PORT": 8080,
    "DATABASE": None,
    "THREADS": 4,
    "MAX_STATES": 1000,
    "MAX_STATE_BYTES": 65536,
    "MAX_STATE_DEPTH": 100,
    "MAX_BODY_BYTES": 10 * 1024 * 1024,
    "BUSY_TIMEOUT_MS": 5000,
    "SYNCHRONOUS": "NORMAL",
    "CHANNEL_TIMEOUT": 30,
    "CONNECTION_LIMIT": 100,
    "LOG_LEVEL": "INFO",
}

INT_RANGES = {
    "PORT": (0, 65535),
    "THREADS": (1, 256),
    "MAX_STATES": (1, 100_000),
    "MAX_STATE_BYTES": (2, 64 * 1024 * 1024),
    "MAX_STATE_DEPTH": (1, 500),
    "MAX_BODY_BYTES": (1024, 1024 * 1024 * 1024),
    "BUSY_TIMEOUT_MS": (0, 600_000),
    "CHANNEL_TIMEOUT": (1, 3600),
    "CONNECTION_LIMIT": (1, 100_000),
}

CHOICES = {
    "SYNCHRONOUS": ("OFF", "NORMAL", "FULL", "EXTRA"),
    "LOG_LEVEL": ("DEBUG", "INFO", "WARNING", "ERROR"),
}


class ConfigError(Exception):
    """A setting has a value the service cannot use."""


def check(config):
    """Coerce and validate every known setting in `config` in place."""
    for key, (low, high) in INT_RANGES.items():
        value = config[key]
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f"{ENV_PREFIX}_{key} must be an integer from {low} to {high}, got {value!r}"
            )
        config[key] = value
    for key, allowed in CHOICES.items():
        value = str(config[key]).upper()
        if value not in allowed:
            raise ConfigError(
                f"{ENV_PREFIX}_{key} must be one of {', '.join(allowed)}, got {config[key]!r}"
            )
        config[key] = value
    for key in ("HOST", "DATABASE"):
        value = config[key]
        if value is None or str(value).strip() == "":
            raise ConfigError(f"{ENV_PREFIX}_{key} must not be empty")
        config[key] = str(value)
    config["DATABASE"] = os.path.abspath(os.path.expanduser(config["DATABASE"]))
    return config
