"""The ``explain`` command line: ``cnnlab explain <tool> ...`` and ``cnnlab report RUN_DIR``.

Every tool module in this package contributes its own ``add_parser(subparsers)``,
which adds one sub-command and sets ``func`` (called as ``args.func(args)``).
:func:`register` adds them: the modules of :data:`TOOLS` become ``cnnlab
explain <tool>``, ``cnnlab explain all`` runs them all and writes the index page
(:mod:`.index`), and the run report is the top-level ``cnnlab report``. With no
tool name, ``cnnlab explain [options]`` is ``cnnlab explain all [options]``
(:func:`default_tool` puts the name in before argparse reads the line).
"""
from __future__ import annotations

import argparse
import sys

from . import conv, features, index, invariance, matched_filter, report, saliency, weight_sharing

TOOLS = (conv, weight_sharing, matched_filter, features, invariance, saliency)


def register(subparsers):
    """Add ``explain`` (with one sub-command per tool) and ``report`` to ``subparsers``; return the ``explain`` parser.

    ``subparsers`` is what ``ArgumentParser.add_subparsers()`` returned; the
    caller then runs ``args.func(args)``.
    """
    explain = subparsers.add_parser(
        "explain", help="pictures and pages that show why convolution works", usage="%(prog)s [TOOL] [options]",
        description="Tools that show why convolutional networks work. Each writes PNG/GIF pictures, a "
                    "self-contained HTML page and a JSON file of the numbers to --out. With no TOOL, every tool "
                    "runs and writes an index page: 'cnnlab explain --data-dir DIR' is 'cnnlab explain all "
                    "--data-dir DIR' (see 'cnnlab explain all --help' for its options).")
    tools = explain.add_subparsers(dest="explain_command", metavar="TOOL")
    for module in TOOLS:
        module.add_parser(tools)
    index.add_parser(tools)
    report.add_parser(subparsers)
    return explain


def default_tool(argv=None) -> list:
    """The command line with ``all`` put in after ``explain`` when no tool name follows it.

    ``explain`` alone, or followed by an option (``--data-dir DIR``), runs every
    tool; ``explain -h`` / ``--help`` still shows the list of tools. ``argv``
    defaults to ``sys.argv[1:]``; the first word that is not an option is the command.
    """
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    i = next((k for k, a in enumerate(argv) if not a.startswith("-")), None)
    if i is not None and argv[i] == "explain":
        rest = argv[i + 1:]
        if not rest or (rest[0].startswith("-") and rest[0] not in ("-h", "--help")):
            argv.insert(i + 1, "all")
    return argv


def build_parser(prog="cnnlab") -> argparse.ArgumentParser:
    """A parser with only the commands of this package (``python -m cnnlab.explain.cli``)."""
    parser = argparse.ArgumentParser(prog=prog, description="cnnlab explain tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(default_tool(argv))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
