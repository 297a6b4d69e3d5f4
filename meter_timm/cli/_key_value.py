"""``KEY=VALUE`` arguments: repeatable ones (``--strategy-param``, ``--model-arg``) and
``--cfg-options``."""

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


class ConfigOptionsAction(DictAction):
    """mmengine's ``DictAction`` for ``--cfg-options``, with a usage error naming the item instead
    of a traceback for an item without ``=`` or a value its parser cannot read: unbalanced
    brackets, or a call such as ``dict(...)`` (on which it recurses until RecursionError)."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values:
            if "=" not in item:
                raise argparse.ArgumentError(self, f"expected KEY=VALUE, got {item!r}")
            try:
                self._parse_iterable(item.partition("=")[2])
            except AssertionError:
                raise argparse.ArgumentError(
                    self, f"cannot read {item!r}: unbalanced brackets"
                ) from None
            except RecursionError:
                raise argparse.ArgumentError(
                    self,
                    f"cannot read {item!r}: values are numbers, strings, True/False/None, "
                    "[lists] and (tuples), not dict(...); set a dict's keys one by one, list "
                    "items by index, e.g. model.selectivity.layers.0.num_bins=8",
                ) from None
        super().__call__(parser, namespace, values, option_string)


def add_key_value_argument(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """``flag KEY=VALUE``, repeatable; the parsed value is a dict (empty without the flag)."""
    parser.add_argument(
        flag, action=KeyValueAction, nargs=1, default={}, metavar="KEY=VALUE", help=help
    )
