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

    As systemd reads an EnvironmentFile (its env-file.c, state by state): `NAME=VALUE`
    per line, whitespace around the `=` and at the ends of an unquoted value ignored,
    lines starting with `#` or `;` ignored (a backslash at their end continues them), a
    quote opening a value only where a value starts: single quotes taken as written,
    double quotes with `\\"`, `\\\\`, `\\$` and `` \\` `` escaped. A backslash at a line's end
    joins the next line; CR ends a line as LF does.
    """
    assignments, warnings = [], []
    name = value = ""
    kept = 0  # the value's length up to its last quoted or escaped character: never stripped
    state, line, start_line = "line", 1, 1
    for char in text + "\n":
        newline = char in "\r\n"
        if state == "line":
            if char in "#;":
                state = "comment"
            elif not char.isspace():
                name, start_line, state = char, line, "name"
        elif state == "comment":
            if char == "\\":
                state = "comment escape"
            elif newline:
                state = "line"
        elif state == "comment escape":
            state = "comment"  # whatever follows, a newline too, stays in the comment
        elif state == "name":
            if char == "=":
                name, value, kept, state = name.strip(), "", 0, "before value"
            elif newline:
                warnings.append(f"line {start_line}: no '=' in {name.strip()!r}; left out")
                state = "line"
            else:
                name += char
        elif state == "before value":
            if newline:
                assignments.append((name, value))
                state = "line"
            elif char == "'":
                state = "single"
            elif char == '"':
                state = "double"
            elif char == "\\":
                state = "value escape"
            elif not char.isspace():
                value, state = value + char, "value"
        elif state == "value":
            if newline:
                assignments.append((name, value[: max(kept, len(value.rstrip()))]))
                state = "line"
            elif char == "\\":
                state = "value escape"
            else:
                value += char
        elif state == "value escape":
            if not newline:  # a backslash-newline joins the lines
                value += char
                kept = len(value)
            state = "value"
        elif state == "single":
            if char == "'":
                kept, state = len(value), "before value"
            else:
                value += char
        elif state == "double":
            if char == '"':
                kept, state = len(value), "before value"
            elif char == "\\":
                state = "double escape"
            else:
                value += char
        elif state == "double escape":
            if not newline:
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
    for name, value in dict(assignments).items():  # a name assigned twice: the last one, as systemd
        environ.setdefault(name, value)
    return warnings
