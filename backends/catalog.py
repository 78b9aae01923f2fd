"""Bots and their keys, for both backends."""

import time
import uuid

import clock
from records import KEY_FINGERPRINT_LENGTH, WRITE_SCOPE, Conflict, NotFound


class Catalog:
    """The bot and key methods of storage.Storage, over SQLStorage's statements."""

    def record_key_use(self, bot_id, key_hash):
        """Note that a request authenticated with this key now; flush_key_uses() stores it."""
        self.key_uses.record(bot_id, key_hash)

    def create_bot(self, slug, name, api_key_hash):
        """Insert a bot with its first key; raises Conflict when the slug is taken."""
        bot_id = str(uuid.uuid4())

        def create(conn):
            self._run(
                conn,
                f"INSERT INTO bots (id, slug, name, created_at) VALUES (:id, :slug, :name, {self.dialect.now})",
                {"id": bot_id, "slug": slug, "name": name},
            )
            self._add_key(conn, bot_id, api_key_hash)
            [bot] = self._records(conn, f"{self._select_bots} WHERE id = :bot", {"bot": bot_id})
            return bot

        try:
            return self._in_transaction(create)
        except Exception as error:
            if self._unique_violation(error):
                raise Conflict(f"Bot {slug!r} already exists") from None
            raise

    def get_bot(self, slug):
        """The bot with this slug (id, slug, name, createdAt, states) or None."""
        rows = self._read(f"{self._select_bots} WHERE slug = :slug", {"slug": slug})
        return rows[0] if rows else None

    def find_bot_credentials(self, slug):
        """(bot id, its working keys) for the slug, or None: the read that authenticates a request.

        Each key is (key hash, when it stops working on this process's time.monotonic()
        clock or None, its scope). The database's clock says how long each key has left, so
        that one clock decides expiry whatever host asks.
        """
        sql = self._once(
            "find_bot_credentials",
            lambda: f"SELECT {self.dialect.text('bots.id')}, k.key_hash, {self.dialect.seconds_until('k.expires_at')},"
            " k.scope FROM bots LEFT JOIN bot_keys AS k ON k.bot_id = bots.id AND NOT"
            f" {self._expired} WHERE bots.slug = :slug",
        )
        with self._reading() as conn:
            rows = self._run(conn, sql, {"slug": slug}).fetchall()
        if not rows:
            return None
        now = time.monotonic()
        return rows[0][0], tuple(
            (key_hash, None if left is None else now + left, scope)
            for _, key_hash, left, scope in rows
            if key_hash is not None
        )

    def list_bots(self):
        """Every bot with its number of states, by slug."""
        return self._read(f"{self._select_bots} ORDER BY slug")

    def page_bots(self, limit, after=None):
        """Up to `limit` bots by slug, those past the slug `after`, and whether more follow."""
        slug = f"slug{self.dialect.by_code_point}"
        where = "" if after is None else f" WHERE {slug} > :after"
        params = {"after": after, "fetch": limit + 1}
        rows = self._read(f"{self._select_bots}{where} ORDER BY {slug} LIMIT :fetch", params)
        return rows[:limit], len(rows) > limit

    def count_bots(self):
        """How many bots exist."""
        return self._scalar("SELECT count(*) FROM bots")

    def replace_bot_key(self, slug, api_key_hash, grace_seconds=0, scope=WRITE_SCOPE):
        """Give the bot a new key of `scope`. Its other keys of that scope keep working for
        `grace_seconds` more (none at 0), or until their own earlier expiry; keys of the
        other scope are left as they are.

        Returns the bot, with `oldKeysExpireAt`: when the last old key stops
        (None when none works any more).
        """
        d = self.dialect

        def replace(conn):
            bot_id = self._bot_id(conn, slug, lock=True)
            params = {"bot": bot_id, "grace": int(grace_seconds), "scope": scope}
            self._forget_expired_keys(conn, bot_id)
            if grace_seconds > 0:
                ends = d.seconds_from_now("grace")
                self._run(
                    conn,
                    f"UPDATE bot_keys SET expires_at = {ends} WHERE bot_id = :bot AND scope = :scope"
                    f" AND (expires_at IS NULL OR expires_at > {ends})",
                    params,
                )
            else:
                self._run(conn, "DELETE FROM bot_keys WHERE bot_id = :bot AND scope = :scope", params)
            expires_at = self._run(
                conn,
                f"SELECT {d.time_text('max(expires_at)')} FROM bot_keys WHERE bot_id = :bot AND scope = :scope",
                params,
            ).fetchone()[0]
            self._add_key(conn, bot_id, api_key_hash, scope)
            # Read in the transaction: once it commits, a delete may take the bot, or a new bot its slug.
            [bot] = self._records(conn, f"{self._select_bots} WHERE id = :bot", params)
            return dict(bot, oldKeysExpireAt=expires_at)

        return self._in_transaction(replace)

    def add_bot_key(self, slug, api_key_hash, scope):
        """Give the bot one more key, of `scope`, beside its others; the key as list_bot_keys() shows it."""

        def add(conn):
            bot_id = self._bot_id(conn, slug, lock=True)
            self._add_key(conn, bot_id, api_key_hash, scope)
            return self._bot_keys(conn, bot_id, " AND key_hash = :key", {"key": api_key_hash})[0]

        return self._in_transaction(add)

    def revoke_bot_keys(self, slug, every=False, fingerprint=None):
        """Stop the bot's old keys (those in a grace period) at once, with `every` all of its keys,
        or with `fingerprint` the one key whose hash starts so; returns how many were revoked.

        NotFound when the bot, or the key with that fingerprint, is not there.
        """

        def revoke(conn):
            bot_id = self._bot_id(conn, slug, lock=True)
            self._forget_expired_keys(conn, bot_id)
            params = {"bot": bot_id, "fingerprint": fingerprint}
            if fingerprint is not None:
                only = f" AND substr(key_hash, 1, {KEY_FINGERPRINT_LENGTH}) = :fingerprint"
            else:
                only = "" if every else " AND expires_at IS NOT NULL"
            revoked = self._run(conn, f"DELETE FROM bot_keys WHERE bot_id = :bot{only}", params).rowcount
            if fingerprint is not None and revoked == 0:
                raise NotFound(f"Bot {slug!r} has no working key with fingerprint {fingerprint}")
            return revoked

        return self._in_transaction(revoke)

    def list_bot_keys(self, slug):
        """The bot's working keys, newest first: a fingerprint (the start of the key's
        hash), its scope, createdAt, expiresAt (None: no expiry) and lastUsedAt (None: never)."""
        self.flush_key_uses()
        with self._reading() as conn:
            return self._bot_keys(conn, self._bot_id(conn, slug))

    def _bot_keys(self, conn, bot_id, only="", params=None):
        d = self.dialect
        return self._records(
            conn,
            f"SELECT substr(key_hash, 1, {KEY_FINGERPRINT_LENGTH}) AS fingerprint, scope,"
            f' {d.time_text("created_at")} AS "createdAt", {d.time_text("expires_at")} AS "expiresAt",'
            f' {d.time_text("last_used_at")} AS "lastUsedAt"'
            f" FROM bot_keys WHERE bot_id = :bot AND NOT {self._expired}{only} ORDER BY created_at DESC, key_hash",
            {"bot": bot_id, **(params or {})},
        )

    def flush_key_uses(self):
        """Store the last use of each bot key, and each admin key, recorded since the last flush."""
        self._store_uses(self.key_uses, "bot_keys", "bot_id")
        self._store_uses(self.admin_key_uses, "admin_keys", "name")

    def _store_uses(self, key_uses, table, owner):
        """Store the uses `key_uses` holds, by (owner, key hash), as the keys' last_used_at in `table`."""
        used = self.dialect.time_param("used")
        sql = (
            f"UPDATE {table} SET last_used_at = {used} WHERE {owner} = :owner AND key_hash = :key"
            f" AND (last_used_at IS NULL OR last_used_at < {used})"
        )
        with key_uses.taken() as uses:
            if uses:
                rows = [
                    {"used": clock.stored_time_of(when), "owner": owner_key, "key": key_hash}
                    for (owner_key, key_hash), when in sorted(uses.items())
                ]
                # A short wait: this runs in a background thread that must not hang on a lock.
                self._in_transaction(lambda conn: self._many(conn, sql, rows), short=True)

    def delete_bot(self, slug):
        """Delete the bot and, by cascade, its states, then its change log; returns the bot as it was."""
        bot = self.get_bot(slug)
        if bot is None:
            raise NotFound(f"Bot {slug!r} not found")

        def delete(conn):
            if not self._run(conn, "DELETE FROM bots WHERE id = :bot", {"bot": bot["id"]}).rowcount:
                raise NotFound(f"Bot {slug!r} not found")  # a delete running beside this one took it
            self._forget_changes(conn, bot["id"])

        self._in_transaction(delete)
        return bot

    def _add_key(self, conn, bot_id, api_key_hash, scope=WRITE_SCOPE):
        self._run(
            conn,
            "INSERT INTO bot_keys (bot_id, key_hash, scope, created_at)"
            f" VALUES (:bot, :key, :scope, {self.dialect.now})",
            {"bot": bot_id, "key": api_key_hash, "scope": scope},
        )

    def _forget_expired_keys(self, conn, bot_id):
        self._run(conn, f"DELETE FROM bot_keys WHERE bot_id = :bot AND {self._expired}", {"bot": bot_id})

    def _bot_id(self, conn, slug, lock=False):
        """The bot's id, or NotFound; with `lock`, the bot cannot be deleted until the transaction ends."""
        row = self._run(
            conn,
            f"SELECT {self.dialect.text('id')} FROM bots WHERE slug = :slug{self.dialect.key_lock if lock else ''}",
            {"slug": slug},
        ).fetchone()
        if row is None:
            raise NotFound(f"Bot {slug!r} not found")
        return row[0]
