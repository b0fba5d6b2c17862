"""The command line: the group in `base`, and one module per family of commands, each command a
thin call into the library. Library modules are imported inside the commands, so that
`xrerank --help` stays instant."""

from __future__ import annotations

from xrerank.cli import apps, deploying, models, server, serving  # noqa: F401 (each registers its commands)
from xrerank.cli.base import cli, main

__all__ = ["cli", "main"]
