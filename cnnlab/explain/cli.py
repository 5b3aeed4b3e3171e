"""The ``explain`` command line: ``cnnlab explain <tool> ...`` and ``cnnlab report RUN_DIR``.

Every tool module in this package contributes its own ``add_parser(subparsers)``,
which adds one sub-command and sets ``func`` (called as ``args.func(args)``).
:func:`register` adds them: the modules of :data:`TOOLS` become ``cnnlab
explain <tool>``, ``cnnlab explain all`` (or ``cnnlab explain`` alone) runs them all
and writes the index page (:mod:`.index`), and the run report is the top-level
``cnnlab report``.
"""
from __future__ import annotations

import argparse

from . import conv, features, index, invariance, matched_filter, report, saliency, weight_sharing

TOOLS = (conv, weight_sharing, matched_filter, features, invariance, saliency)


def register(subparsers):
    """Add ``explain`` (with one sub-command per tool) and ``report`` to ``subparsers``; return the ``explain`` parser.

    ``subparsers`` is what ``ArgumentParser.add_subparsers()`` returned; the
    caller then runs ``args.func(args)``.
    """
    explain = subparsers.add_parser(
        "explain", help="pictures and pages that show why convolution works",
        description="Tools that show why convolutional networks work. Each writes PNG/GIF pictures, a "
                    "self-contained HTML page and a JSON file of the numbers to --out.")
    tools = explain.add_subparsers(dest="explain_command", metavar="TOOL")
    for module in TOOLS:
        module.add_parser(tools)
    everything = index.add_parser(tools)          # "cnnlab explain" alone runs "cnnlab explain all"
    explain.set_defaults(func=lambda args: everything.get_default("func")(everything.parse_args([])))
    report.add_parser(subparsers)
    return explain


def build_parser(prog="cnnlab") -> argparse.ArgumentParser:
    """A parser with only the commands of this package (``python -m cnnlab.explain.cli``)."""
    parser = argparse.ArgumentParser(prog=prog, description="cnnlab explain tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
