"""What the operating system says keeps a SQLite database from being used: for log lines and start-up."""

import os

# Less free space than this on the database's disk is named as the cause: the
# smallest write needs a few pages, and a failed one may have needed many.
LOW_SPACE_BYTES = 1024 * 1024


def database_problem(path):
    """Why the database at `path` cannot be opened or written, as '<path>: <cause>'; None when nothing shows.

    Only stat() and access(): opening and closing any descriptor of the database
    file would drop the locks that SQLite holds on it in this process.
    """
    problem = folder_problem(path)
    if problem is not None:
        return problem
    if not os.path.exists(path):
        return f"{path}: no such file"
    for name in (path, f"{path}-wal", f"{path}-shm"):
        if os.path.exists(name) and not os.access(name, os.W_OK):
            return f"{name}: not writable"
    try:
        disk = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    free = disk.f_bavail * disk.f_frsize
    if free < LOW_SPACE_BYTES:
        return f"{path}: its disk has only {free} bytes free"
    return None


def folder_problem(path):
    """Why no file can be created at `path` for its folder, as '<folder>: <cause>'; None when nothing shows."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"{folder}: no such folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder}: folder not writable"
    return None


def described(message, path):
    """`message`, followed by what database_problem() finds, if anything."""
    problem = database_problem(path)
    return message if problem is None else f"{message} ({problem})"
