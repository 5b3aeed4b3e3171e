"""The ``explain`` command line: ``cnnlab explain <tool> ...`` and ``cnnlab report RUN_DIR``.

Every tool module in this package contributes its own ``add_parser(subparsers)``,
which adds one sub-command and sets ``func`` (called as ``args.func(args)``).
:func:`register` collects them: modules listed in :data:`EXPLAIN_MODULES`
become ``cnnlab explain <name>``, those in :data:`TOP_LEVEL_MODULES` (the run
report) top-level commands. A listed module that is not present is skipped; one
that fails to import gets a placeholder command that reports the error when run.
"""
from __future__ import annotations

import argparse
import importlib

EXPLAIN_MODULES = ["conv", "weight_sharing", "matched_filter", "features", "invariance", "saliency"]
TOP_LEVEL_MODULES = ["report"]


class _Broken:
    """A tool module that exists but failed to import (a missing dependency, an error in it)."""

    def __init__(self, error):
        self.error = error


def _import(name):
    """Import ``cnnlab.explain.<name>``: the module, ``None`` if it does not exist, else :class:`_Broken`.

    One broken tool must not take the whole command line down with it, so
    any error raised while importing it is kept and reported when it is run.
    """
    full = f"{__package__}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name in (full, __package__):
            return None
        return _Broken(e)
    except Exception as e:  # noqa: BLE001 -- reported when the tool is run
        return _Broken(e)


def _unavailable(subparsers, name, error):
    """A placeholder command for a tool whose module failed to import: running it explains why."""
    command = name.replace("_", "-")
    # No option prefix: whatever follows the command is taken as-is, so running it always reaches ``fail``.
    p = subparsers.add_parser(command, help=f"(unavailable: {type(error).__name__}: {error})", prefix_chars="+",
                              add_help=False)

    def fail(args):
        raise ValueError(f"'{command}' is unavailable: importing cnnlab.explain.{name} failed: "
                         f"{type(error).__name__}: {error}")
    p.set_defaults(func=fail)
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)


def available(names=None) -> list[str]:
    """The explain modules that import, of ``names`` (default: all of :data:`EXPLAIN_MODULES`)."""
    return [n for n in (names or EXPLAIN_MODULES) if not isinstance(_import(n), (type(None), _Broken))]


def register(subparsers):
    """Add ``explain`` (with one sub-command per tool module) and the top-level tools to ``subparsers``.

    ``subparsers`` is what ``ArgumentParser.add_subparsers()`` returned; the
    caller then runs ``args.func(args)``. Returns the ``explain`` parser.
    """
    explain = subparsers.add_parser(
        "explain", help="pictures and pages that show why convolution works",
        description="Tools that show why convolutional networks work. Each writes PNG/GIF pictures, a "
                    "self-contained HTML page and a JSON file of the numbers to --out.")
    tools = explain.add_subparsers(dest="explain_command", metavar="TOOL")
    tools.required = True
    for names, target in ((EXPLAIN_MODULES, tools), (TOP_LEVEL_MODULES, subparsers)):
        for name in names:
            if name.replace("_", "-") in target.choices:      # already provided by the caller's parser
                continue
            module = _import(name)
            if isinstance(module, _Broken):
                _unavailable(target, name, module.error)
            elif module is not None and hasattr(module, "add_parser"):
                module.add_parser(target)
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
