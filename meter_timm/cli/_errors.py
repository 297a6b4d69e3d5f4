"""How the command line reports user mistakes: one line ``meter-timm CMD: error: ...``, exit code 2.

User mistakes are ValueError (this package's validation errors all derive from it), missing or
unusable files, misbehaving plugins, unknown ``type=`` names in a config (mmengine's registry
raises KeyError for those) and config keys that a constructor does not take or misses (a
TypeError that mmengine's registry re-raises, naming the class). Anything else, e.g. a TypeError
or KeyError raised by our own code, is a programming error and keeps its traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

from meter_timm._names import check_model_name, did_you_mean, is_unbound_argument

FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


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


_WORKER_ERROR = re.compile(
    r"Caught (\w+) in DataLoader worker process \d+\.\n"
    r"Original Traceback \(most recent call last\):\n"
)


def _unwrap_worker_error(text: str) -> str:
    """The original message of an exception that torch re-raised from a DataLoader worker (whose
    message is then "Caught X in DataLoader worker process N." and the worker's whole traceback);
    any other text unchanged."""
    match = _WORKER_ERROR.match(text)
    if match is None:
        return text
    # the traceback ends with the exception as "[module.]X: message", possibly on several lines
    last = re.compile(rf"^(?:[\w.]+\.)?{match.group(1)}(?:: |$)", re.MULTILINE)
    found = list(last.finditer(text, match.end()))
    return text[found[-1].end() :] if found else text


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
    if isinstance(exc, TypeError) and _raised_by_mmengine_registry(exc):
        # mmengine re-raises what a config's constructor raised, naming the class; an argument
        # that does not bind is a misspelt or missing config key, not a bug
        return one_line(f"{exc} (check the config's keys)") if is_unbound_argument(exc) else None
    if isinstance(exc, (ValueError, PluginError, *FILE_ERRORS)):
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return one_line(_unwrap_worker_error(str(message))) or type(exc).__name__
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


def _config_syntax_error(path: Path) -> SyntaxError | None:
    """The syntax error of config ``path`` or of one of its ``_base_`` files, naming that file
    (mmengine parses them without a file name)."""
    import ast

    if not path.is_file():
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        return exc
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets
        ):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return None
            for base in [bases] if isinstance(bases, str) else bases:
                found = _config_syntax_error(path.parent / str(base))
                if found is not None:
                    return found
    return None


def load_config(path):
    """``mmengine.config.Config.fromfile(path)``; a syntax error in the config or one of its
    ``_base_`` files is a ValueError naming ``file:line``."""
    from mmengine.config import Config

    try:
        return Config.fromfile(str(path))
    except SyntaxError as exc:
        found = _config_syntax_error(Path(path)) or exc
        text = f": {found.text.strip()}" if found.text else ""
        raise ValueError(
            f"{found.filename}:{found.lineno}: syntax error in the config ({found.msg}){text}"
        ) from exc


def check_arguments(args) -> None:
    """Early checks of the arguments shared by several commands: ``config`` and ``model``."""
    config = getattr(args, "config", None)
    if isinstance(config, str):
        check_config_path(config)
    model = getattr(args, "model", None)
    # `ablate` also takes a training config (a .py file) as its model
    if isinstance(model, str) and not model.endswith(".py") and not Path(model).exists():
        check_model_name(model)
