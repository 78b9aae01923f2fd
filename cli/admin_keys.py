"""`botstate admin-keys`: create, list and revoke the keys of the admin API (/api/admin/)."""

import click

from cli.common import OneLineGroup, emit, json_option, storage, storage_errors
from operations import admin_keys as operations

admin_keys = OneLineGroup("admin-keys", help="Create, list and revoke the keys of the admin API.")


@admin_keys.command("create")
@click.argument("name")
@json_option
def admin_keys_create(name, as_json):
    """Create an admin key named NAME and print it (shown only this once)."""
    with storage_errors():
        created = operations.create_admin_key(storage(), name)
    emit(
        as_json,
        created,
        f"Created admin key '{created['name']}' (fingerprint {created['fingerprint']}).\n"
        f"Admin key: {created['adminKey']}\n"
        "Store it now: only its hash is kept, so it cannot be shown again."
        " Send it as `Authorization: Bearer KEY` to /api/admin/.",
    )


@admin_keys.command("list")
@json_option
def admin_keys_list(as_json):
    """List admin keys: name, fingerprint, created and last used."""
    with storage_errors():
        rows = operations.list_admin_keys(storage())
    lines = [
        f"{r['name']}\t{r['fingerprint']}\tcreated {r['createdAt']}\tlast used {r['lastUsedAt'] or 'never'}"
        for r in rows
    ]
    emit(
        as_json,
        rows,
        "\n".join(lines) if lines else "No admin keys yet. Create one with: botstate admin-keys create NAME",
    )


@admin_keys.command("revoke")
@click.argument("name")
@json_option
def admin_keys_revoke(name, as_json):
    """Revoke the admin key NAME: it stops working at once."""
    with storage_errors():
        revoked = operations.revoke_admin_key(storage(), name)
    emit(as_json, revoked, f"Revoked admin key '{name}': it no longer works.")
