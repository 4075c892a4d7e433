"""Probe and hook plugins for herdsman's tests (see pyproject.toml for their names)."""
