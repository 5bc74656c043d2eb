"""Errors of cohort orchestration (samples table, markers, stage wiring)."""

from __future__ import annotations

from voxtell.errors import ConfigError, InputError


class SamplesError(ConfigError):
    """The samples table is unreadable or violates its contract (fix the table and rerun)."""


class CohortError(InputError):
    """A study cannot be processed because an upstream stage did not produce its input."""
