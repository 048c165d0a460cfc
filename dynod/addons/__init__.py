"""Add-ons: backing services dynod runs and owns for an app (README, "Add-ons"): the provider
interface and the built-in providers (Redis, PostgreSQL), the durable add-on records, and the
supervision of their servers."""
