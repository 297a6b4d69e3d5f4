"""Names a user typed: "did you mean" hints, the check of timm model names, and config keys a
constructor did not take. Imports nothing of the package, so every room (the command line, the
engine adapters, strategies) can use it."""

from __future__ import annotations

import difflib
import re

__all__ = ["did_you_mean", "check_model_name", "is_unbound_argument"]

_UNBOUND_ARGUMENT = re.compile(r"unexpected keyword argument|missing \d+ required")


def is_unbound_argument(exc: BaseException) -> bool:
    """Whether ``exc`` is the TypeError of a call whose arguments did not bind (an unexpected or
    a missing one): built from a config, a misspelt or missing key, not a bug."""
    return isinstance(exc, TypeError) and bool(_UNBOUND_ARGUMENT.search(str(exc)))


def did_you_mean(name: str, choices, n: int = 3, cutoff: float = 0.6) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the choices close to ``name``, else ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def check_model_name(name: str) -> None:
    """ValueError with a "did you mean" for an unknown timm model name or pretrained tag."""
    import timm

    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        raise ValueError(
            f"unknown model {name!r}{did_you_mean(base, timm.list_models())} "
            "(timm.list_models() lists every name)"
        )
    if tag:
        tags = [full.partition(".")[2] for full in timm.list_pretrained(f"{base}.*")]
        if tag not in tags:
            known = ", ".join(f"{base}.{t}" for t in tags) or "none"
            raise ValueError(
                f"unknown pretrained tag {tag!r} of {base}{did_you_mean(tag, tags)} (tags: {known})"
            )
