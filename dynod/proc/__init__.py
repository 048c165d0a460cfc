"""One process and its supervision: spawning a child, a dyno's run and stop sequence, the
dyno manager, the reaper sidecar and orphan tracking."""
