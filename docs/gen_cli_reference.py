"""Regenerate the command reference in ``docs/cli.md`` from every command's ``--help``.

Usage::

    python docs/gen_cli_reference.py           # rewrite the generated part of docs/cli.md
    python docs/gen_cli_reference.py --check   # exit 1 if docs/cli.md is out of date

Only the text between the two marker comments is generated; the rest of the page is
written by hand. ``tests/test_cli.py`` fails when the page is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from perspt_store.cli import cli

CLI_MD = Path(__file__).with_name("cli.md")
BEGIN = "<!-- BEGIN GENERATED REFERENCE: python docs/gen_cli_reference.py -->"
END = "<!-- END GENERATED REFERENCE -->"
WIDTH = 80  # fixed, so the output does not depend on the terminal


def command_help(*command: str) -> str:
    """The ``--help`` text of ``perspt-store <command>``."""
    result = CliRunner().invoke(
        cli, [*command, "--help"], prog_name="perspt-store", terminal_width=WIDTH
    )
    if result.exit_code != 0:
        raise RuntimeError(f"perspt-store {' '.join(command)} --help failed: {result.output}")
    return result.stdout


def render_reference() -> str:
    """The generated section: the group's help, then each command's, in the CLI's order."""
    parts = ["## perspt-store", "", "```text", command_help().rstrip(), "```", ""]
    for name in cli.list_commands(click.Context(cli)):
        parts += [f"## perspt-store {name}", "", "```text", command_help(name).rstrip(),
                  "```", ""]
        group = cli.get_command(click.Context(cli), name)
        if isinstance(group, click.Group):  # a group's subcommands, each under its own title
            for sub in group.list_commands(click.Context(group)):
                parts += [f"### perspt-store {name} {sub}", "", "```text",
                          command_help(name, sub).rstrip(), "```", ""]
    return "\n".join(parts)


def updated(page: str) -> str:
    """``page`` with the text between the markers replaced by :func:`render_reference`."""
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{CLI_MD} lacks the markers {BEGIN!r} and {END!r}")
    return f"{head}{BEGIN}\n\n{render_reference()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    page = CLI_MD.read_text(encoding="utf-8")
    new = updated(page)
    if "--check" in argv:
        if new != page:
            print(f"{CLI_MD} is out of date: run python docs/gen_cli_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != page:
        CLI_MD.write_text(new, encoding="utf-8")
        print(f"updated {CLI_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
