"""`--env-file FILE`: variable assignments in systemd's EnvironmentFile syntax, read into the environment."""

import os
import re

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Inside double quotes a backslash keeps these characters (and drops a newline); before others it stays.
DOUBLE_QUOTE_ESCAPES = '"\\`$'


class EnvFileError(ValueError):
    """The file cannot be read as assignments: the message names the line."""


def parse(text):
    """The (name, value) assignments of `text`, in order, and warnings about lines left out.

    As systemd reads an EnvironmentFile: `NAME=VALUE` per line, whitespace around the
    `=` and at the ends of an unquoted value ignored, lines starting with `#` or `;`
    ignored, values in single quotes taken as written, in double quotes with `\\"`,
    `\\\\`, `\\$` and `` \\` `` escaped, and a backslash at a line's end joining the next.
    """
    assignments, warnings = [], []
    name = value = None
    kept = 0  # the value's length up to its last quoted character: never stripped
    state, line, start_line = "line", 1, 1
    for char in text + "\n":
        if state == "line":
            if char in "#;":
                state = "comment"
            elif not char.isspace():
                name, start_line, state = char, line, "name"
        elif state == "comment":
            if char == "\n":
                state = "line"
        elif state == "name":
            if char == "=":
                name, value, kept, state = name.strip(), "", 0, "before value"
            elif char == "\n":
                warnings.append(f"line {start_line}: no '=' in {name.strip()!r}; left out")
                state = "line"
            else:
                name += char
        elif state == "before value" and char in " \t":
            pass
        elif state in ("before value", "value"):
            if char == "\n":
                assignments.append((name, value[: max(kept, len(value.rstrip()))]))
                state = "line"
            elif char == "'":
                state = "single"
            elif char == '"':
                state = "double"
            elif char == "\\":
                state = "value escape"
            else:
                value, state = value + char, "value"
        elif state == "value escape":
            if char != "\n":  # a backslash-newline joins the lines
                value += char
                kept = len(value)
            state = "value"
        elif state == "single":
            if char == "'":
                kept, state = len(value), "value"
            else:
                value += char
        elif state == "double":
            if char == '"':
                kept, state = len(value), "value"
            elif char == "\\":
                state = "double escape"
            else:
                value += char
        elif state == "double escape":
            if char != "\n":
                value += char if char in DOUBLE_QUOTE_ESCAPES else "\\" + char
            state = "double"
        if char == "\n":
            line += 1
    if state in ("single", "double", "double escape"):
        raise EnvFileError(f"line {start_line}: the value of {name} has no closing quote")
    valid = []
    for assigned, assigned_value in assignments:
        if VARIABLE_NAME.fullmatch(assigned):
            valid.append((assigned, assigned_value))
        else:
            warnings.append(f"{assigned!r} is not a variable name; left out")
    return valid, warnings


def load(path, environ=os.environ):
    """Set each variable `path` assigns that the environment does not set already; returns the warnings.

    The environment wins, so that `BOTSTATE_PORT=9000 botstate --env-file FILE serve` does what it says.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise EnvFileError(getattr(error, "strerror", None) or str(error)) from None
    assignments, warnings = parse(text)
    for name, value in assignments:
        environ.setdefault(name, value)
    return warnings
