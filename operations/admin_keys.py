"""Admin keys, the keys of /api/admin/: create (shown once), list and revoke; made only on the server's host."""

import keys
from operations import Refused, refusing
from operations.bots import bad_name
from schemas import is_valid_name


def create_admin_key(storage, name):
    """A new admin key named `name`: its record and the key itself (shown this once)."""
    if not is_valid_name(name):
        raise Refused(400, bad_name(name))
    admin_key = keys.generate_key(keys.ADMIN_KEY_PREFIX)
    with refusing():
        record = storage.create_admin_key(name, keys.hash_key(admin_key))
    return {**record, "adminKey": admin_key}


def list_admin_keys(storage):
    """Every admin key by name: name, fingerprint, created and last used."""
    return storage.list_admin_keys()


def revoke_admin_key(storage, name):
    """Delete the admin key `name`: it stops at once. Its record as it was."""
    with refusing():
        return storage.revoke_admin_key(name)
