"""`botstate bots`: create, list, re-key, add and revoke keys of, and delete bots (operations.bots does the work)."""

import click

from cli.common import OneLineGroup, confirmed, emit, every_page, existing_bot, json_option, storage, storage_errors
from operations import bots as operations
from storage import KEY_SCOPES, WRITE_SCOPE

bots = OneLineGroup("bots", help="Create, list, re-key and delete bots.")

scope_option = click.option(
    "--scope",
    type=click.Choice(KEY_SCOPES),
    default=WRITE_SCOPE,
    show_default=True,
    help="What the key may do: write (everything) or read (GET only).",
)


@bots.command("create")
@click.argument("slug")
@click.option("--name", help="A display name (default: the slug).")
@json_option
def bots_create(slug, name, as_json):
    """Create a bot and print its API key (shown only this once)."""
    with storage_errors():
        bot = operations.create_bot(storage(), slug, name)
    emit(
        as_json,
        bot,
        f"Created bot '{bot['slug']}' (id {bot['id']}).\n"
        f"API key: {bot['apiKey']}\n"
        "Store it now: only its hash is kept, so it cannot be shown again.",
    )


@bots.command("list")
@json_option
def bots_list(as_json):
    """List bots with their number of stored states."""
    with storage_errors():
        rows = every_page(lambda limit, after: operations.list_bots(storage(), limit, after))
    lines = [f"{r['slug']}\t{r['name']}\t{r['states']} states\t{r['id']}" for r in rows]
    emit(as_json, rows, "\n".join(lines) if lines else "No bots yet. Create one with: botstate bots create SLUG")


@bots.command("rotate-key")
@click.argument("slug")
@click.option(
    "--grace",
    type=click.IntRange(0, operations.MAX_GRACE_SECONDS),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="How long the old key keeps working beside the new one (0: it stops at once).",
)
@scope_option
@json_option
def bots_rotate_key(slug, grace, scope, as_json):
    """Give a bot a new API key of a scope; its old keys of that scope stop at once, or after --grace seconds."""
    with storage_errors():
        rotated = operations.rotate_key(storage(), slug, grace, scope)
    expires_at = rotated["oldKeysExpireAt"]
    old = "old key" if scope == WRITE_SCOPE else f"old {scope} key"
    if expires_at is None:
        old_keys = f"The {old} no longer works."
    else:
        old_keys = f"The {old} keeps working until {expires_at}; `botstate bots revoke-key {slug}` stops it sooner."
    new = "New API key" if scope == WRITE_SCOPE else f"New {scope} API key"
    emit(as_json, rotated, f"{new} for '{rotated['slug']}': {rotated['apiKey']}\n{old_keys}")


@bots.command("add-key")
@click.argument("slug")
@scope_option
@json_option
def bots_add_key(slug, scope, as_json):
    """Give a bot one more API key beside its others (shown only this once); --scope read for GETs only."""
    with storage_errors():
        added = operations.add_key(storage(), slug, scope)
    emit(
        as_json,
        added,
        f"New {scope} API key for '{slug}' (fingerprint {added['fingerprint']}): {added['apiKey']}\n"
        "Store it now: only its hash is kept, so it cannot be shown again.",
    )


@bots.command("revoke-key")
@click.argument("slug")
@click.option(
    "--all", "every", is_flag=True, help="Revoke the current key too: the bot is locked out until rotate-key."
)
@click.option("--key", "fingerprint", metavar="FINGERPRINT", help="Revoke only the key `bots keys` shows so.")
@json_option
def bots_revoke_key(slug, every, fingerprint, as_json):
    """Stop a bot's old keys at once, ending their --grace period (with --all every key, with --key one)."""
    with storage_errors():
        revoked = operations.revoke_keys(storage(), slug, every=every, fingerprint=fingerprint)["revoked"]
    if fingerprint is not None:
        text = f"Revoked the key {fingerprint} of '{slug}': it no longer works."
    elif every:
        text = (
            f"Revoked {revoked} key(s) of '{slug}': every request gets 403 until"
            f" `botstate bots rotate-key {slug}` gives it a new key."
        )
    elif revoked:
        text = f"Revoked {revoked} old key(s) of '{slug}': only its keys outside a grace period work."
    else:
        text = f"'{slug}' has no old keys in a grace period: nothing revoked."
    emit(as_json, {"slug": slug, "revoked": revoked}, text)


@bots.command("keys")
@click.argument("slug")
@json_option
def bots_keys(slug, as_json):
    """List a bot's working keys: fingerprint, scope, created, expires and last used."""
    with storage_errors():
        rows = operations.list_keys(storage(), slug)
    lines = [
        f"{r['fingerprint']}\t{r['scope']}\tcreated {r['createdAt']}\texpires {r['expiresAt'] or 'never'}"
        f"\tlast used {r['lastUsedAt'] or 'never'}"
        for r in rows
    ]
    if not lines:
        lines = [f"'{slug}' has no working key. Give it one with: botstate bots rotate-key {slug}"]
    emit(as_json, rows, "\n".join(lines))


@bots.command("delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Confirm: the bot and all its states are deleted.")
@json_option
def bots_delete(slug, yes, as_json):
    """Delete a bot and every state it stored."""
    with storage_errors():
        bot = existing_bot(storage(), slug)
        confirmed(
            yes,
            as_json,
            f"Deleting bot {slug!r} also deletes its {bot['states']} states: add --yes to confirm",
            f"Delete bot '{slug}' and its {bot['states']} states?",
        )
        deleted = operations.delete_bot(storage(), slug)
    emit(as_json, deleted, f"Deleted bot '{slug}' and its {deleted['deletedStates']} states.")
