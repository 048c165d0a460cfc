"""dynod's durable state: atomic files, the release ledger, the app registry, dynod.toml."""
