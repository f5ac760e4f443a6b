"""Evaluation and benchmark scripts (not part of the installed service)."""
