"""mmengine checkpoints: the one reader behind every mmengine checkpoint load, and durable saves.

Reading. mmengine 0.10.7 reads checkpoints with a bare ``torch.load`` (local files,
``open-mmlab://``, ``s3://``, ...) or with ``torch.hub``'s full unpickling (``http(s)://``, which
also trusts whatever lies in the hub cache). Importing this module routes every path given to
:class:`mmengine.runner.CheckpointLoader` to :func:`meter_timm.checkpoint.load_checkpoint_file`, the
package's one reader (``weights_only=True`` with an explicit allowlist of what mmengine writes):
local files directly, http(s) URLs once downloaded, and any other scheme (also one registered
later) is refused with an error naming the path. ``--resume`` (also through a ``last_checkpoint``
file), ``load_from``, ``init_cfg=dict(type="Pretrained")`` and weight files all go through it; no
file, URL or directory is ever trusted with full unpickling.

Saving. A run killed at any moment keeps a complete checkpoint that ``--resume`` finds:

* :func:`publish_file` / :func:`write_text_atomically`: a file is written under a temporary name in
  the same directory, fsync'ed, renamed over its final name, and the directory fsync'ed
  (:class:`meter_timm.mm.runner.MeterRunner` saves every local checkpoint this way);
* :class:`DurableCheckpointHook` (what ``MeterRunner`` builds for ``type="CheckpointHook"``): the
  new checkpoint is complete first, then ``last_checkpoint`` names it, and only then are the
  checkpoints that ``max_keep_ckpts`` (or a better ``save_best``) makes outdated deleted.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
from mmengine.dist import barrier, get_dist_info, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.runner.checkpoint import CheckpointLoader

from meter_timm.checkpoint import CheckpointReadError, load_checkpoint_file
from meter_timm.mm.registry import HOOKS

__all__ = [
    "load_from_local_safe",
    "load_from_http_safe",
    "load_from_unsupported_scheme",
    "url_cache_path",
    "publish_file",
    "write_text_atomically",
    "partial_name",
    "DurableCheckpointHook",
]


def load_from_local_safe(filename: str, map_location=None):
    """mmengine's local loader: the package's one reader (mmengine logs the name after
    ``load_from_``)."""
    return load_checkpoint_file(os.fspath(filename), map_location=map_location)


def load_from_http_safe(filename: str, map_location=None):
    """mmengine's http(s) loader: the file is downloaded into torch's hub cache, in a folder of its
    own URL (by rank 0 first, as mmengine does), then read by the package's one reader like any
    local file. A copy already in the cache is reused and read by the same rules: a cache
    directory is no proof of trust."""
    path = url_cache_path(filename)
    rank, world_size = get_dist_info()
    if rank == 0:
        _download(filename, path)
    if world_size > 1:
        barrier()
        if rank > 0:  # processes of other nodes, without the shared file system
            _download(filename, path)
    return load_checkpoint_file(path, map_location=map_location)


def url_cache_path(url: str) -> Path:
    """Where the http(s) loader keeps the download of ``url``: torch's hub cache, in a folder of
    that exact URL, so two URLs ending in the same file name never share a copy."""
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise CheckpointReadError(f"cannot read checkpoint {url}: the URL names no file")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(torch.hub.get_dir()) / "checkpoints" / "meter_timm_urls" / digest / name


def _download(url: str, path: Path) -> None:
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as err:  # URLError, HTTPError, timeouts, ...
        raise CheckpointReadError(
            f"cannot download checkpoint {url}: {type(err).__name__}: {err}"
        ) from None


def load_from_unsupported_scheme(filename: str, map_location=None):
    """Every scheme but local files and http(s) (``open-mmlab://``, ``s3://``, ``pavi://``, ...):
    mmengine reads those with full unpickling, so they are refused."""
    raise CheckpointReadError(
        f"cannot read checkpoint {filename}: meter-timm reads checkpoints from local files and "
        "http(s) URLs only (nothing else is read without full unpickling); download it and "
        "pass the local path"
    )


def _safe_checkpoint_loader(cls, path) -> Callable:
    """Replaces ``CheckpointLoader._get_checkpoint_loader``: only the package's own loaders, so a
    scheme that mmengine or a third party registers later cannot bypass the one reader."""
    path = str(path)
    if re.match(r"https?://", path):
        return load_from_http_safe
    if "://" in path or any(prefix and re.match(prefix, path) for prefix in cls._schemes):
        return load_from_unsupported_scheme
    return load_from_local_safe


CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_safe, force=True)
CheckpointLoader.register_scheme(
    prefixes=("http://", "https://"), loader=load_from_http_safe, force=True
)
CheckpointLoader._get_checkpoint_loader = classmethod(_safe_checkpoint_loader)


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

    def before_train(self, runner) -> None:
        super().before_train(runner)
        # a resumed run deletes its previous best checkpoint when it finds a better one: only a
        # file of this run's checkpoint folder (the path came from the checkpoint, which is data)
        folder = os.path.normpath(str(self.out_dir))
        kept = {"best_ckpt": getattr(self, "best_ckpt_path", None)}
        by_metric = getattr(self, "best_ckpt_path_dict", {})
        kept.update({f"best_ckpt_{k}": v for k, v in by_metric.items()})
        for key, path in kept.items():
            if path and os.path.dirname(os.path.normpath(str(path))) != folder:
                runner.logger.warning(
                    f"the resumed {key} {path} is not in this run's checkpoint folder {folder}: "
                    "it will not be deleted when a better checkpoint is saved"
                )
                if key == "best_ckpt":
                    self.best_ckpt_path = None
                else:
                    by_metric[key[len("best_ckpt_") :]] = None

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
        if not self.save_best:  # also when validating outside training (no file backend yet)
            return
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
