"""The ``meter-timm`` command line: one sub-command per module in this package.

Each sub-command module defines ``add_arguments(parser)`` and ``run(args) -> int | None`` and
is imported only when its command is used, so ``meter-timm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command name -> (module under meter_timm.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model from an mmengine config"),
    "test": ("test", "run mmengine's test loop of a config on a checkpoint"),
    "eval": (
        "evaluate",
        "evaluate a model's weights on depth data (NYU, image folders, KITTI) without a config",
    ),
    "predict": ("predict", "predict metric depth for images"),
    "dissect": ("dissect", "measure the depth selectivity of a model's units"),
    "ablate": (
        "ablate",
        "silence the units of each depth bin and measure the per-bin error change",
    ),
    "strategies": ("strategies", "list the depth-bin assignment strategies and their plugins"),
    "make-data": ("make_data", "write the built-in procedural indoor data set as NYU h5 files"),
    "export": ("export", "export a model to ONNX (dynamic batch), checked in ONNX Runtime"),
    "convert": ("convert", "write weights in timm's hub layout (model.safetensors + config.json)"),
}


def build_parser(commands: dict[str, tuple[str, str]] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meter-timm",
        description="METER depth models and the depth selectivity of their units: train, "
        "evaluate, dissect and export.",
        epilog="Run 'meter-timm COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in commands.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:  # `meter-timm` / `python -m meter_timm` alone: the help
        parser.print_help()
        return 0
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        from meter_timm.cli._errors import did_you_mean

        print(
            f"meter-timm: error: unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)} "
            f"(commands: {', '.join(COMMANDS)})",
            file=sys.stderr,
        )
        return 2
    if argv[0].startswith("-"):
        parser.parse_args(argv)  # prints help / the error and exits
        return 2
    name = argv[0]
    module = importlib.import_module(f"meter_timm.cli.{COMMANDS[name][0]}")
    sub_parser = argparse.ArgumentParser(prog=f"meter-timm {name}", description=COMMANDS[name][1])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    # user mistakes end in one line `meter-timm CMD: error: ...` and exit code 2 (see _errors);
    # METER_TIMM_DEBUG=1 shows the traceback
    from meter_timm.cli import _errors

    try:
        _errors.check_arguments(args)
        return int(module.run(args) or 0)
    except SystemExit as exc:  # sub-commands may exit with a message
        if not isinstance(exc.code, str) or os.environ.get("METER_TIMM_DEBUG"):
            raise
        message = exc.code.removeprefix(f"meter-timm {name}: ").removeprefix(f"{name}: ")
        print(f"meter-timm {name}: error: {_errors.one_line(message)}", file=sys.stderr)
        return 2
    except Exception as exc:
        message = _errors.user_error_message(exc)
        if message is None or os.environ.get("METER_TIMM_DEBUG"):
            raise
        print(
            f"meter-timm {name}: error: {message} (METER_TIMM_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
