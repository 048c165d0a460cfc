"""Builds: fetching a source, running buildpacks, the build pipeline, git push and its hook."""
