"""dha: one command for every step of the pipeline.

Each MLproject entry point is a subcommand (``dha run`` is ``main``); ``dha predict``,
``dha benchmark`` and ``dha profile`` are for users working with registered or published
models. Bad
input ends with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

from dha_train.errors import UserError

__all__ = ["main", "SUBCOMMANDS"]

# subcommand -> (module under pipeline.steps, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "main",
        "the whole pipeline: search_train -> measure -> export -> register -> compare",
    ),
    "search-train": (
        "search_train",
        "DHA search and training (Algorithm 1) in one stage; the derived child, test-evaluated",
    ),
    "measure": ("measure", "the paper's Table 5 on this machine for a search_train run's child"),
    "export": ("export", "ONNX and TensorRT files with parity gates, logged as MLflow models"),
    "register": ("register", "register exported models with version tags and aliases"),
    "compare": ("compare", "runs side by side and an accuracy-vs-latency plot"),
    "predict": ("predict", "top-5 classes of images with a registered model"),
    "profile": (
        "profile",
        "params, multiply-adds and latency of one architecture (named, torchvision:, JSON)",
    ),
    "benchmark": (
        "benchmark",
        "every format of a model on this machine: test accuracy, latency at batch 1 and N, size",
    ),
}

# what moved, and where to (subcommand, flag or None): one line instead of argparse's error
MOVED: dict[tuple[str, str | None], str] = {
    ("derive", None): "dha derive is gone: search-train derives the child and evaluates it on "
    "the test split (its run's child/); pass that run id to measure and export as "
    "--search-run-id",
    ("measure", "--arch"): "the standalone measurement is now dha profile --arch ... "
    "(dha measure is the pipeline step: --search-run-id)",
}


def _moved(argv: Sequence[str]) -> str | None:
    command = _command(argv)
    for (name, flag), hint in MOVED.items():
        if command == name and (flag is None or flag in argv):
            return hint
    return None


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line, with a 'did you mean' for misspelt flags."""

    def error(self, message: str) -> None:  # type: ignore[override]
        import difflib

        if "unrecognized arguments" in message:
            flags = [a for a in message.split(":", 1)[1].split() if a.startswith("-")]
            known = [o for a in self._actions for o in a.option_strings]
            hints = []
            for flag in flags:
                close = difflib.get_close_matches(flag.replace("_", "-"), known, n=1)
                if close:
                    hints.append(f"{flag} (did you mean {close[0]}?)")
            if hints:
                message = "unknown parameter " + ", ".join(hints)
        sys.stderr.write(f"error: {message}; see '{self.prog} --help'\n")
        sys.exit(2)


class _Version(argparse.Action):
    """``--version``: the installed package's version (looked up only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("dha-pipeline")
        except PackageNotFoundError:  # a source tree that was never installed
            found = "unknown (not installed; run `make setup`)"
        print(f"{parser.prog} {found}")
        parser.exit()


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not a flag)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(
    command: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``dha`` parser and its subcommands' parsers.

    Only ``command``'s step module is imported (and its flags added): the step modules import
    torch and MLflow, which take seconds, and ``dha --help`` needs none of them.
    """
    parser = _Parser(prog="dha", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parsers = {}
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == command:
            step = import_module(f"pipeline.steps.{module}")
            p.description = (step.__doc__ or help_).strip()
            step.add_arguments(p)
            p.set_defaults(handler=step.run)
        parsers[name] = p
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # steps print their own
    hint = _moved(argv)
    if hint is not None:
        sys.stderr.write(f"error: {hint}\n")
        return 2
    parser, subparsers = build_parser(_command(argv))
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if unknown:  # reported by the subcommand, which knows its own flags
        subparsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("mlflow", "alembic", "urllib3", "fvcore", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from dha_train.engine.host_memory import retain_freed_memory

    retain_freed_memory()  # large CPU tensors reuse memory instead of faulting it in again
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except UserError as exc:
        if args.verbose:
            logging.getLogger(__name__).exception("user error")
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
