"""Admin keys: the keys of /api/admin/, for both backends; stored as hashes, like bot keys."""

from records import KEY_FINGERPRINT_LENGTH, Conflict, NotFound


class AdminKeys:
    """The admin key methods of storage.Storage, over SQLStorage's statements."""

    def create_admin_key(self, name, key_hash):
        """Insert an admin key; as list_admin_keys() shows it. Conflict when the name is taken."""
        sql = f"INSERT INTO admin_keys (name, key_hash, created_at) VALUES (:name, :key, {self.dialect.now})"
        try:
            self._in_transaction(lambda conn: self._run(conn, sql, {"name": name, "key": key_hash}))
        except Exception as error:
            if self._unique_violation(error):
                raise Conflict(f"Admin key {name!r} already exists") from None
            raise
        return next(key for key in self.list_admin_keys() if key["name"] == name)

    def list_admin_keys(self):
        """Every admin key, by name: name, fingerprint, createdAt and lastUsedAt (None: never)."""
        self._store_uses(self.admin_key_uses, "admin_keys", "name")
        d = self.dialect
        return self._read(
            f"SELECT name, substr(key_hash, 1, {KEY_FINGERPRINT_LENGTH}) AS fingerprint,"
            f' {d.time_text("created_at")} AS "createdAt", {d.time_text("last_used_at")} AS "lastUsedAt"'
            " FROM admin_keys ORDER BY name"
        )

    def revoke_admin_key(self, name):
        """Delete the admin key `name`; it as it was. NotFound when there is none."""
        revoked = [key for key in self.list_admin_keys() if key["name"] == name]
        deleted = self._in_transaction(
            lambda conn: self._run(conn, "DELETE FROM admin_keys WHERE name = :name", {"name": name}).rowcount
        )
        if not deleted:
            raise NotFound(f"Admin key {name!r} not found")
        return revoked[0]

    def find_admin_key(self, key_hash):
        """The name of the admin key with this hash, or None; its use is noted for flush_key_uses()."""
        with self._reading() as conn:
            row = self._run(conn, "SELECT name FROM admin_keys WHERE key_hash = :key", {"key": key_hash}).fetchone()
        if row is None:
            return None
        self.admin_key_uses.record(row[0], key_hash)
        return row[0]

    def count_admin_keys(self):
        """How many admin keys exist."""
        return self._scalar("SELECT count(*) FROM admin_keys")
