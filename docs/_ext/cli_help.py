"""``{cli-help}`` directive: the help text of ``scgpcl`` or one of its subcommands.

The text comes from :func:`scgpcl.cli.build_parser` at build time, so the
command-line reference cannot drift from the code::

    ```{cli-help} cluster
    ```
"""

from __future__ import annotations

import argparse
import os

from docutils import nodes
from docutils.parsers.rst import Directive

WIDTH = 100


def help_text(command: str | None) -> str:
    from scgpcl.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)  # argparse wraps to the terminal width
    try:
        parser = build_parser()
        if command is None:
            return parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command].format_help()
        raise ValueError(f"scgpcl has no subcommand {command!r}")
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


class CliHelp(Directive):
    optional_arguments = 1
    has_content = False

    def run(self):
        command = self.arguments[0] if self.arguments else None
        try:
            text = help_text(command)
        except Exception as err:  # reported as a build warning (an error under -W)
            return [self.state.document.reporter.warning(f"cli-help: {err}", line=self.lineno)]
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    app.add_directive("cli-help", CliHelp)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
