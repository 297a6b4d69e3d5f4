"""mmengine checkpoints: one safe reader for every local file, and durable saves.

Reading. mmengine 0.10.7 reads local checkpoints with a bare ``torch.load``. This module replaces
that loader (the ``''`` scheme of :class:`mmengine.runner.CheckpointLoader`) with
:func:`load_from_local_safe`, which is :func:`meter_timm.models.load_checkpoint_file`:
``weights_only=True`` with an explicit allowlist of exactly what mmengine writes (numpy values,
``HistoryBuffer`` and its statistics methods). ``--resume``, ``load_from`` and weight files all
go through it; no file and no directory is ever trusted with full unpickling. Importing this
module installs the loader (idempotent).
"""
from __future__ import annotations

import os

from mmengine.runner.checkpoint import CheckpointLoader

from meter_timm.models._checkpoint import CheckpointReadError, checkpoint_allowlist, load_checkpoint_file

__all__ = ["load_from_local_safe", "checkpoint_allowlist", "CheckpointReadError"]


def load_from_local_safe(filename: str, map_location=None):
    """mmengine's local loader, replaced by the one weights-only reader (see the module docstring)."""
    return load_checkpoint_file(os.fspath(filename), map_location=map_location)


CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_safe, force=True)
