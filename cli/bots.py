"""`botstate bots`: create, list, re-key, revoke keys of and delete bots."""

import sys

import click

import keys
from cli.common import OneLineGroup, check_name, emit, existing_bot, json_option, storage, storage_errors
from schemas import MAX_SLUG_LENGTH, is_valid_bot_slug

MAX_GRACE_SECONDS = 30 * 24 * 3600

bots = OneLineGroup("bots", help="Create, list, re-key and delete bots.")


@bots.command("create")
@click.argument("slug")
@click.option("--name", help="A display name (default: the slug).")
@json_option
def bots_create(slug, name, as_json):
    """Create a bot and print its API key (shown only this once)."""
    if not is_valid_bot_slug(slug):
        raise click.ClickException(
            f"invalid slug {slug[:MAX_SLUG_LENGTH]!r}: use only letters, digits, hyphens and underscores"
            f" (at most {MAX_SLUG_LENGTH})"
        )
    check_name(name)
    api_key = keys.generate_key()
    with storage_errors():
        bot = storage().create_bot(slug, name or slug, keys.hash_key(api_key))
    emit(
        as_json,
        {"id": bot["id"], "slug": bot["slug"], "name": bot["name"], "apiKey": api_key},
        f"Created bot '{bot['slug']}' (id {bot['id']}).\n"
        f"API key: {api_key}\n"
        "Store it now: only its hash is kept, so it cannot be shown again.",
    )


@bots.command("list")
@json_option
def bots_list(as_json):
    """List bots with their number of stored states."""
    with storage_errors():
        rows = storage().list_bots()
    lines = [f"{r['slug']}\t{r['name']}\t{r['states']} states\t{r['id']}" for r in rows]
    emit(as_json, rows, "\n".join(lines) if lines else "No bots yet. Create one with: botstate bots create SLUG")


@bots.command("rotate-key")
@click.argument("slug")
@click.option(
    "--grace",
    type=click.IntRange(0, MAX_GRACE_SECONDS),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="How long the old key keeps working beside the new one (0: it stops at once).",
)
@json_option
def bots_rotate_key(slug, grace, as_json):
    """Give a bot a new API key; the old one stops at once, or after --grace seconds."""
    api_key = keys.generate_key()
    with storage_errors():
        bot = storage().replace_bot_key(slug, keys.hash_key(api_key), grace_seconds=grace)
    expires_at = bot["oldKeysExpireAt"]
    if expires_at is None:
        old_keys = "The old key no longer works."
    else:
        old_keys = f"The old key keeps working until {expires_at}; `botstate bots revoke-key {slug}` stops it sooner."
    emit(
        as_json,
        {
            "id": bot["id"],
            "slug": bot["slug"],
            "name": bot["name"],
            "apiKey": api_key,
            "oldKeysExpireAt": expires_at,
        },
        f"New API key for '{bot['slug']}': {api_key}\n{old_keys}",
    )


@bots.command("revoke-key")
@click.argument("slug")
@click.option(
    "--all", "every", is_flag=True, help="Revoke the current key too: the bot is locked out until rotate-key."
)
@json_option
def bots_revoke_key(slug, every, as_json):
    """Stop a bot's old keys at once, ending their --grace period (with --all, every key)."""
    with storage_errors():
        revoked = storage().revoke_bot_keys(slug, every=every)
    if every:
        text = (
            f"Revoked {revoked} key(s) of '{slug}': every request gets 403 until"
            f" `botstate bots rotate-key {slug}` gives it a new key."
        )
    elif revoked:
        text = f"Revoked {revoked} old key(s) of '{slug}': only its newest key works."
    else:
        text = f"'{slug}' has no old keys in a grace period: nothing revoked."
    emit(as_json, {"slug": slug, "revoked": revoked}, text)


@bots.command("keys")
@click.argument("slug")
@json_option
def bots_keys(slug, as_json):
    """List a bot's working keys: fingerprint, created, expires and last used."""
    with storage_errors():
        rows = storage().list_bot_keys(slug)
    lines = [
        f"{r['fingerprint']}\tcreated {r['createdAt']}\texpires {r['expiresAt'] or 'never'}"
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
        if not yes:
            if as_json or not sys.stdin.isatty():
                raise click.ClickException(
                    f"Deleting bot {slug!r} also deletes its {bot['states']} states: add --yes to confirm"
                )
            click.confirm(f"Delete bot '{slug}' and its {bot['states']} states?", abort=True, err=True)
        storage().delete_bot(slug)
    emit(
        as_json,
        {"id": bot["id"], "slug": bot["slug"], "deletedStates": bot["states"]},
        f"Deleted bot '{slug}' and its {bot['states']} states.",
    )
