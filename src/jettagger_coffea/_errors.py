"""One exception type for user-facing problems: the CLI prints its message as one line."""

from __future__ import annotations


class JetTaggerError(ValueError):
    """A problem with the user's input (file, branch, config, model) that names what is at fault."""
