"""Typed errors shared by every stage.

Every error a user can cause (bad input, wrong configuration, missing files) is a
``VoxTellError`` subclass whose message says what to do. The workflow turns these into
status rows; anything else (OOM, a killed process, a bug) is left to fail the job so that
the scheduler retries it.
"""

from __future__ import annotations


class VoxTellError(Exception):
    """Base class of all errors caused by inputs or configuration."""


class InputError(VoxTellError):
    """An input file or value is missing, unreadable or malformed."""


class ConfigError(VoxTellError):
    """A configuration value is invalid or inconsistent."""
