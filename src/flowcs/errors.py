"""One exception family for everything a user can get wrong.

The CLI turns any ``FlowcsError`` into a one-line message and a non-zero exit
code, so library code raises these (naming the file / value at fault) instead
of letting a shape error surface from deep inside torch.
"""

from __future__ import annotations


class FlowcsError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, bad file)."""

    exit_code = 1


class ConfigError(FlowcsError):
    """Invalid configuration or command-line value (unknown key, out-of-range rate...)."""

    exit_code = 2


class DataError(FlowcsError):
    """A data file or folder is missing, unreadable, corrupt or of the wrong layout."""


class CheckpointError(FlowcsError):
    """A checkpoint is missing, corrupt, unsafe, or belongs to another model/config."""
