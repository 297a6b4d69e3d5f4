"""Loading mmengine checkpoints under torch >= 2.6 without turning ``weights_only`` off for foreign files.

mmengine 0.10.7 reads local checkpoints with a bare ``torch.load(filename, map_location)``. Since
torch 2.6 that means ``weights_only=True``, which refuses mmengine's own training state: the
message hub keeps ``HistoryBuffer`` objects holding numpy arrays and numpy scalars, and a
``HistoryBuffer`` pickles a bound ``getattr`` that no allowlist should accept.

This module replaces mmengine's loader for local paths (the ``''`` scheme of
:class:`mmengine.runner.CheckpointLoader`) with :func:`load_from_local_safe`:

1. every file is first read with ``weights_only=True``, with the numpy array/dtype/scalar types and
   ``HistoryBuffer`` allowlisted (this alone reads model-only checkpoints and plain state dicts);
2. only if that fails AND the file lies inside a directory registered with
   :func:`trust_directory` (the run's own work dir; :class:`meter_timm.mm.runner.MeterRunner` registers
   it) is the file unpickled in full, with a log line saying so;
3. any other file is refused with an error naming it.

Importing this module installs the loader (idempotent).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = ["load_from_local_safe", "trust_directory", "untrust_directory", "trusted_directories",
           "safe_checkpoint_globals", "UntrustedCheckpointError"]

_TRUSTED: set[Path] = set()


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs full unpickling but lies outside every trusted work directory."""


def safe_checkpoint_globals() -> list:
    """The types allowlisted for ``weights_only=True`` loads (numpy arrays, dtypes, scalars)."""
    dtype_classes = {type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64, np.complex64, np.complex128)}
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / 1
    return [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
            *sorted(dtype_classes, key=lambda c: c.__name__)]


def trust_directory(path: str | os.PathLike) -> Path:
    """Allow full unpickling of checkpoints inside ``path`` (a run's own work dir)."""
    resolved = Path(path).expanduser().resolve()
    _TRUSTED.add(resolved)
    return resolved


def untrust_directory(path: str | os.PathLike) -> None:
    _TRUSTED.discard(Path(path).expanduser().resolve())


def trusted_directories() -> list[Path]:
    return sorted(_TRUSTED)


def _is_trusted(filename: str) -> bool:
    resolved = Path(filename).resolve()
    return any(resolved.is_relative_to(root) for root in _TRUSTED)


def load_from_local_safe(filename: str, map_location=None):
    """mmengine's local loader, safe by default; see the module docstring."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint {filename} can not be found")
    try:
        with torch.serialization.safe_globals(safe_checkpoint_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if not _is_trusted(filename):
            raise UntrustedCheckpointError(
                f"checkpoint {filename} holds objects that torch.load(weights_only=True) refuses, and "
                f"it is not inside a trusted run directory ({', '.join(map(str, trusted_directories())) or 'none'}); "
                "copy it into the run's work_dir to resume from it, or load only its weights") from error
    print_log(f"loading training state from the run's own directory with full unpickling: {filename}",
              logger="current")
    return torch.load(filename, map_location=map_location, weights_only=False)


CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_safe, force=True)
