"""Repeatable ``--option KEY=VALUE`` arguments (``--strategy-param``, ``--model-arg``)."""

from __future__ import annotations

import argparse

from mmengine.config import DictAction


class KeyValueAction(DictAction):
    """mmengine's ``DictAction`` (values read as int, float, bool, None, lists and tuples, else
    kept as strings), one ``KEY=VALUE`` per flag, every flag collected into one dict; an item
    without ``=`` is a usage error naming the option. Use with ``nargs=1, default={}``."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [item for item in values if "=" not in item]
        if bad:
            raise argparse.ArgumentError(self, f"expected KEY=VALUE, got {bad[0]!r}")
        super().__call__(parser, namespace, values, option_string)


def add_key_value_argument(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """``flag KEY=VALUE``, repeatable; the parsed value is a dict (empty without the flag)."""
    parser.add_argument(
        flag, action=KeyValueAction, nargs=1, default={}, metavar="KEY=VALUE", help=help
    )
