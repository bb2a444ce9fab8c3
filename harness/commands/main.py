"""The `autoresearch` command: parse flags, call the library, map errors to a message and exit code.

Subcommands live in `SUBCOMMANDS`, a table of (name, module, help); each module exposes
`add_arguments(parser)` and `run(args) -> int`, so adding one is one line here. Every
subcommand but `prepare` (prepare.cli, which stands alone) is a thin module in this package.
`main(argv) -> int` never calls sys.exit (tests call it directly): a HarnessError, or one of
prepare's DataErrors, is one line on stderr and exit 2; argparse errors exit 2 with the usage.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from harness.errors import HarnessError
from prepare.errors import DataError as PrepareDataError

# Errors the person can act on: one line on stderr, the error's exit code, no traceback.
_USER_ERRORS: tuple[type[Exception], ...] = (HarnessError, PrepareDataError)

# (name, module, one-line help).
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("run", "harness.commands.run", "run the experiment loop on a tag"),
    ("status", "harness.commands.status", "show a tag's results (or list the tags)"),
    ("prepare", "prepare.cli", "download/build a dataset and its tokenizer"),
    ("report", "harness.commands.report", "summarize a night: progress.png, report.html, --json"),
    ("publish", "harness.commands.publish", "push a tag's branch and its results together"),
    ("compare", "harness.commands.compare", "compare branches from several GPUs or machines"),
    ("transplant", "harness.commands.transplant", "queue another branch's kept changes as proposals"),
    ("show", "harness.commands.show", "print one attempt: its diff, summary and log tail"),
]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() returns the code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise _UsageError(f"{self.prog}: error: {message}")


class _UsageError(Exception):
    pass


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = _Parser(prog="autoresearch", description="An autonomous experiment loop for ML research.")
    from harness import __version__

    parser.add_argument("--version", action="version", version=f"autoresearch {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules: dict[str, ModuleType] = {}
    for name, module_name, help_text in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        sub = subs.add_parser(
            name, help=help_text, description=(module.__doc__ or help_text).strip().splitlines()[0]
        )
        module.add_arguments(sub)
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, modules = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    try:
        code = int(modules[args.command].run(args))
        sys.stdout.flush()  # inside the try: a reader that went away is seen here, not at exit
        return code
    except BrokenPipeError:
        # `autoresearch report --json | head -1`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's own flush at exit does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except _USER_ERRORS as exc:
        print(f"autoresearch {args.command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        # A full disk stops the night: no row can be written. The journal keeps the attempt.
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"autoresearch {args.command}: error: no space left on device{where}: "
            "free some space, then run the same command again with --resume",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
