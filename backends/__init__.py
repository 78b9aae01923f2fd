"""Storage backends: one module per database, each implementing storage.Storage over backends.sql."""
