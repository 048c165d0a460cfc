"""`dynod export`'s rendering: one release of an app turned into the files another engine runs
(systemd units, Kubernetes manifests, a Procfile and .env). Pure: no I/O (README, "dynod
export")."""
