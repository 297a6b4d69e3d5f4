"""How the command line reports user mistakes: one line ``meter-timm CMD: error: ...``, exit code 2.

User mistakes are ValueError (this package's validation errors all derive from it), missing or
unusable files, misbehaving plugins, and unknown ``type=`` names in a config (mmengine's registry
raises KeyError for those). Anything else, e.g. a TypeError or KeyError raised by our own code, is
a programming error and keeps its traceback.
"""

from __future__ import annotations

import difflib
from pathlib import Path

FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def did_you_mean(name: str, choices, n: int = 3, cutoff: float = 0.6) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the choices close to ``name``, else ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def _raised_by_mmengine_registry(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename.replace("\\", "/") if tb is not None else ""
    return "/mmengine/registry/" in filename


def one_line(text: str) -> str:
    """A multi-line message as one line: the first line, then the others joined with '; '."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} {'; '.join(lines[1:])}"


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of a user mistake; None for a programming error (to be re-raised)."""
    from meter_timm.strategies.plugins import PluginError

    if isinstance(exc, KeyError) and not isinstance(exc, ValueError):
        if not _raised_by_mmengine_registry(exc):
            return None
        message = exc.args[0] if exc.args else ""
        return one_line(
            str(message).split(" Please check whether")[0] + " (check the config's type= names)"
        )
    if isinstance(exc, (ValueError, PluginError, *FILE_ERRORS)):
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return one_line(str(message)) or type(exc).__name__
    return None


def check_config_path(value: str) -> None:
    """FileNotFoundError with a "did you mean" over nearby configs when ``value`` is not a file."""
    path = Path(value)
    if path.is_file():
        return
    candidates = set()
    for folder in (path.parent, Path("mm_configs")):
        if folder.is_dir():
            candidates.update(str(p) for p in folder.rglob("*.py") if "_base_" not in p.parts)
    raise FileNotFoundError(
        f"config file not found: {value}{did_you_mean(value, sorted(candidates))}"
    )


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


def check_arguments(args) -> None:
    """Early checks of the arguments shared by several commands: ``config`` and ``model``."""
    config = getattr(args, "config", None)
    if isinstance(config, str):
        check_config_path(config)
    model = getattr(args, "model", None)
    # `ablate` also takes a training config (a .py file) as its model
    if isinstance(model, str) and not model.endswith(".py") and not Path(model).exists():
        check_model_name(model)
