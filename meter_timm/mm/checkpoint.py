"""mmengine checkpoints: the one reader installed as mmengine's local loader, and durable saves.

Reading. mmengine 0.10.7 reads local checkpoints with a bare ``torch.load``. Importing this module
replaces that loader (the ``''`` scheme of :class:`mmengine.runner.CheckpointLoader`) with
:func:`meter_timm.checkpoint.load_checkpoint_file`, the package's one reader (``weights_only=True``
with an explicit allowlist of what mmengine writes). ``--resume``, ``load_from`` and weight files
all go through it; no file and no directory is ever trusted with full unpickling.

Saving. A run killed at any moment keeps a complete checkpoint that ``--resume`` finds:

* :func:`publish_file` / :func:`write_text_atomically`: a file is written under a temporary name in
  the same directory, fsync'ed, renamed over its final name, and the directory fsync'ed
  (:class:`meter_timm.mm.runner.MeterRunner` saves every local checkpoint this way);
* :class:`DurableCheckpointHook` (what ``MeterRunner`` builds for ``type="CheckpointHook"``): the
  new checkpoint is complete first, then ``last_checkpoint`` names it, and only then are the
  checkpoints that ``max_keep_ckpts`` (or a better ``save_best``) makes outdated deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.runner.checkpoint import CheckpointLoader

from meter_timm.checkpoint import load_checkpoint_file
from meter_timm.mm.registry import HOOKS

__all__ = [
    "load_from_local_safe",
    "publish_file",
    "write_text_atomically",
    "partial_name",
    "DurableCheckpointHook",
]


def load_from_local_safe(filename: str, map_location=None):
    """mmengine's local loader: the package's one reader (mmengine logs the name after
    ``load_from_``)."""
    return load_checkpoint_file(os.fspath(filename), map_location=map_location)


CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_safe, force=True)


def partial_name(filename: str) -> str:
    """The temporary name a file is written under before it is published (same directory)."""
    return f".{filename}.partial"


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_file(partial: str | os.PathLike, final: str | os.PathLike) -> None:
    """Make the complete file ``partial`` durable and rename it to ``final`` in one atomic step."""
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, final)
    _fsync_directory(Path(final).parent)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text``: readers see the old content or the new one, never a part."""
    path = Path(path)
    partial = path.with_name(partial_name(path.name))
    partial.write_text(text)
    publish_file(partial, path)


class _DeferredRemovals:
    """A file backend whose ``remove``/``rmtree`` only note the path (done after the save)."""

    def __init__(self, backend, deferred: list) -> None:
        self._backend, self._deferred = backend, deferred

    def remove(self, path) -> None:
        self._deferred.append(("remove", path))

    def rmtree(self, path) -> None:
        self._deferred.append(("rmtree", path))

    def __getattr__(self, name):
        return getattr(self._backend, name)


@HOOKS.register_module()
class DurableCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` that never deletes a checkpoint before its successor is
    complete.

    Order of a save: the new checkpoint (written atomically by ``MeterRunner.save_checkpoint``),
    then ``last_checkpoint`` (atomically), then the deletion of outdated checkpoints. Same arguments
    as ``CheckpointHook``.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
        if not is_main_process():
            return
        write_text_atomically(os.path.join(runner.work_dir, "last_checkpoint"), self.last_ckpt)
        for old_step in outdated:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old_step))
            if path != self.last_ckpt and self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif path != self.last_ckpt and self.file_backend.isdir(path):  # deepspeed checkpoints
                self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine removes the previous best before writing the new one: defer the removal
        backend, deferred = self.file_backend, []
        self.file_backend = _DeferredRemovals(backend, deferred)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        current = {
            getattr(self, "best_ckpt_path", None),
            *getattr(self, "best_ckpt_path_dict", {}).values(),
            self.last_ckpt,
        }
        for action, path in deferred:
            if path not in current:
                getattr(backend, action)(path)
