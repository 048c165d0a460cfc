"""Logplex (each app's ring of lines and its tails) and the terminal printer."""
