"""Slugs: the built app's tarball, its checked unpacking, the content-addressed store."""
