"""``MeterRunner``: mmengine's Runner with the three fixes this project's training needs.

1. Safe resume: every checkpoint, the run's own included, is read with ``weights_only=True`` and
   an explicit allowlist of what mmengine writes (see :mod:`meter_timm.mm.checkpoint`); a file
   given to resume must hold the whole training state (meta data, message hub, weights that fit
   the model exactly, optimizer, schedulers and random states), checked before anything of it is
   loaded, or the run stops with one line naming the file and what is missing. Saves are
   atomic and durable, and ``type="CheckpointHook"`` builds a
   :class:`~meter_timm.mm.checkpoint.DurableCheckpointHook`, so a killed run keeps a checkpoint.
2. Exact resume: a :class:`~meter_timm.mm.hooks.RandomStateHook` stores the Python, numpy and torch
   random states in every checkpoint and restores them when training resumes, so augmentations
   drawn after the resume are the ones the uninterrupted run draws; a
   :class:`~meter_timm.mm.hooks.ValidationStateHook` records the last finished validation, so a
   validation that the checkpoint was saved before runs on resume; the resumable loops continue
   inside an epoch, and at its end.
3. Multi-process training on CPU: with ``--launcher pytorch`` (torchrun) and no CUDA, mmengine
   0.10.7 calls ``torch.cuda.set_device`` and gives DDP ``device_ids``; both fail on CPU. Here the
   process group is created with gloo (``env_cfg.dist_cfg.backend``, default gloo without CUDA) and
   the model is wrapped without ``device_ids``. With CUDA, mmengine's own path (nccl) is unchanged.
   The initial weights are broadcast tensor by tensor (mmengine also tries to broadcast
   non-tensor extra state, such as the selectivity strategies', and fails). With several
   processes a ``SyncBuffersHook`` averages the BatchNorm statistics after each training epoch,
   so validation, the dissection and the checkpoint all see the same model.
"""

from __future__ import annotations

import datetime
import os
import random
import re

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.dist import broadcast, is_distributed, is_main_process
from mmengine.hooks import CheckpointHook, SyncBuffersHook
from mmengine.model import is_model_wrapper, revert_sync_batchnorm
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, Runner
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

from meter_timm._names import is_unbound_argument
from meter_timm.mm.checkpoint import DurableCheckpointHook, partial_name, publish_file
from meter_timm.mm.registry import LOOPS, MODEL_WRAPPERS, RUNNERS

__all__ = ["MeterRunner", "init_cpu_process_group"]


#: the file name mmengine's CheckpointHook gives a best checkpoint: best_<metric>_<epoch|iter>...
_BEST_NAME = re.compile(r"best_[^/\\]+")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def init_cpu_process_group(dist_cfg: dict | None = None) -> str:
    """Create the default process group for a torchrun launch without CUDA; returns the backend.

    ``dist_cfg`` is ``env_cfg.dist_cfg``: ``backend`` (nccl is replaced by gloo, which is the only
    CPU backend that ships with torch) and ``timeout`` in seconds; other keys go to
    ``init_process_group``.
    """
    cfg = dict(dist_cfg or {})
    backend = cfg.pop("backend", "gloo")
    if backend == "nccl":
        backend = "gloo"
    if cfg.get("timeout") is not None:
        cfg["timeout"] = datetime.timedelta(seconds=cfg["timeout"])
    cfg.pop("init_backend", None)
    torch_dist.init_process_group(
        backend=backend,
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        **cfg,
    )
    return backend


def _random_states() -> dict:
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_random_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def _validation_due(loop, count: int) -> bool:
    """Whether a train loop validates after epoch (or iteration) ``count``, by mmengine's rule."""
    return (
        loop.runner.val_loop is not None
        and count >= loop.val_begin
        and (count % loop.val_interval == 0 or count == loop._max_epochs_or_iters)
    )


def _run_pending_validation(loop, count: int) -> None:
    """Validate after epoch (or iteration) ``count`` if the resumed checkpoint was saved before
    that validation finished (the checkpoint's ``validated_iter`` says which one did)."""
    runner = loop.runner
    validated = getattr(runner, "_validated_iter", None)
    if count == 0 or validated is None or validated == runner.iter:
        return
    loop._decide_current_val_interval()
    if _validation_due(loop, count):
        runner.logger.info(
            f"resumed from a checkpoint saved before the validation that followed it: "
            f"validating now (iteration {runner.iter})"
        )
        runner.val_loop.run()


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` that also resumes exactly inside an epoch.

    Resumed from an iteration checkpoint saved after batch ``r`` of an epoch, the epoch's loader
    (same sampler epoch, so the same order) is drawn ``r`` batches further without training on
    them, then the random states are put back to those of the checkpoint, and training goes on with
    batch ``r + 1`` under its own index. Drawing the skipped batches costs their loading time.
    Exact as long as data workers are not persistent (mmengine reseeds non-persistent workers every
    epoch).
    """

    @property
    def _max_epochs_or_iters(self) -> int:
        return self._max_epochs

    def run(self):
        self.runner.call_hook("before_train")  # puts the checkpoint's random states back
        if self._iter == self._epoch * len(self.dataloader):  # resumed at an epoch's end
            _run_pending_validation(self, self._epoch)
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if _validation_due(self, self._epoch):
                self.runner.val_loop.run()
        self.runner.call_hook("after_train")
        return self.runner.model

    def run_epoch(self) -> None:
        done = self._iter - self._epoch * len(self.dataloader)
        if done == len(self.dataloader) > 0:
            # an iteration checkpoint of the epoch's last batch: every batch is trained, only the
            # end of the epoch (schedulers, epoch checkpoint, validation after it) is left; no
            # loader is started, as none was in the uninterrupted run after that batch
            self.runner.call_hook("before_train_epoch")
            self.runner.model.train()
            self.runner.logger.info(
                f"resumed at the end of epoch {self._epoch + 1}: all its batches were trained "
                "before the checkpoint"
            )
            self.runner.call_hook("after_train_epoch")
            self._epoch += 1
            return None
        if not 0 < done < len(self.dataloader):
            return super().run_epoch()
        self.runner.call_hook("before_train_epoch")
        self.runner.model.train()
        states = _random_states()  # those of the checkpoint (restored by RandomStateHook)
        batches = iter(self.dataloader)
        for _ in range(done):
            next(batches)
        _set_random_states(states)
        self.runner.logger.info(
            f"resumed inside epoch {self._epoch + 1}: skipped its first {done} "
            "batches, which the checkpoint was trained on"
        )
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook("after_train_epoch")
        self._epoch += 1


class _RestoreStatesAfterSkip:
    """Wraps a loader iterator so that the first ``skip`` batches are drawn under saved random
    states: the states before the first of them are put back after the last."""

    def __init__(self, iterator, skip: int, after_skip=None) -> None:
        self.iterator, self.remaining, self.states = iterator, skip, None
        self.after_skip = after_skip  # called once the states are back

    def __iter__(self):
        return self

    def __next__(self):
        if self.remaining > 0 and self.states is None:
            self.states = _random_states()
        batch = next(self.iterator)
        if self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                _set_random_states(self.states)
                if self.after_skip is not None:
                    self.after_skip()
        return batch


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` whose resume is exact: mmengine draws the batches already
    trained on again to skip them, after the checkpoint's random states are restored; here the
    states are put back once the skipped batches are drawn."""

    @property
    def _max_epochs_or_iters(self) -> int:
        return self._max_iters

    def run(self):
        if self._iter > 0:  # after the skip, the validation the checkpoint came before, if any
            self.dataloader_iterator = _RestoreStatesAfterSkip(
                self.dataloader_iterator,
                self._iter,
                after_skip=lambda: _run_pending_validation(self, self._iter),
            )
        return super().run()


def _revise_keys(state: dict, revise_keys) -> dict:
    """``state`` with mmengine's ``revise_keys`` (pattern, replacement) applied to its keys."""
    for pattern, replacement in revise_keys:
        state = {re.sub(pattern, replacement, key): value for key, value in state.items()}
    return state


def _build_resumable_loop(runner, loop_class, loop: dict):
    """``loop_class`` built from ``train_cfg``; a key it does not take (``max_epoch``) is a
    ValueError naming train_cfg, not a TypeError traceback."""
    cfg = {k: v for k, v in loop.items() if k not in ("type", "by_epoch")}
    try:
        return loop_class(**cfg, runner=runner, dataloader=runner._train_dataloader)
    except TypeError as exc:
        if is_unbound_argument(exc):
            raise ValueError(f"train_cfg: {exc}") from None
        raise


@RUNNERS.register_module()
class MeterRunner(Runner):
    """mmengine ``Runner`` with safe resume, exact random state and CPU (gloo) multi-process runs.

    Takes exactly the arguments of :class:`mmengine.runner.Runner`; build it with
    ``MeterRunner.from_cfg(cfg)`` or ``runner_type = "MeterRunner"`` in a config.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._resuming_from: str | None = None
        self._resume_parts = (True, True)  # resume_optimizer, resume_param_scheduler
        super().__init__(*args, **kwargs)
        from meter_timm.mm.hooks import RandomStateHook, ValidationStateHook

        for kind in (RandomStateHook, ValidationStateHook):
            if not any(isinstance(hook, kind) for hook in self.hooks):
                self.register_hook(kind())
        if self.distributed and not any(isinstance(hook, SyncBuffersHook) for hook in self.hooks):
            # each process's BatchNorm statistics drift apart (DDP does not broadcast buffers):
            # averaged before each validation and checkpoint, so both see the same model
            self.register_hook(SyncBuffersHook())

    def register_default_hooks(self, hooks=None) -> None:
        hooks = dict(hooks or {})
        checkpoint = hooks.get("checkpoint", dict(type="CheckpointHook", interval=1))
        if isinstance(checkpoint, dict) and checkpoint.get("type") in (
            "CheckpointHook",
            CheckpointHook,
        ):
            hooks["checkpoint"] = {**checkpoint, "type": DurableCheckpointHook}
        super().register_default_hooks(hooks)

    def build_train_loop(self, loop):
        # resume exactly: inside an epoch for epoch-based loops, and iteration-based loops too
        if isinstance(loop, dict) and (
            loop.get("type") in ("EpochBasedTrainLoop", EpochBasedTrainLoop)
            or ("type" not in loop and loop.get("by_epoch"))
        ):
            return _build_resumable_loop(self, ResumableEpochBasedTrainLoop, loop)
        if isinstance(loop, dict) and (
            loop.get("type") in ("IterBasedTrainLoop", IterBasedTrainLoop)
            or ("type" not in loop and loop.get("by_epoch") is False)
        ):
            return _build_resumable_loop(self, ResumableIterBasedTrainLoop, loop)
        return super().build_train_loop(loop)

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        # every process's random states, gathered here, where all processes are (mmengine's
        # save_checkpoint and its hooks run on rank 0 only)
        self._random_states_per_rank = None
        if self.distributed:
            from mmengine.dist import all_gather

            from meter_timm.mm.hooks import pack_cpu_random_states

            gathered = all_gather(pack_cpu_random_states(_random_states()))
            self._random_states_per_rank = [t.cpu() for t in gathered]
        # local files: written under a temporary name, fsync'ed, then renamed (never half a file)
        if "://" in str(out_dir) or not is_main_process():
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        super().save_checkpoint(out_dir, partial_name(filename), *args, **kwargs)
        publish_file(os.path.join(out_dir, partial_name(filename)), os.path.join(out_dir, filename))

    def resume(
        self,
        filename: str,
        resume_optimizer: bool = True,
        resume_param_scheduler: bool = True,
        map_location="default",
    ) -> None:
        if self._resume and self._load_from is None:  # the name comes from last_checkpoint
            filename = self._checkpoint_named_by_last_checkpoint(str(filename))
        self._resuming_from = str(filename)
        self._resume_parts = (resume_optimizer, resume_param_scheduler)
        try:
            super().resume(filename, resume_optimizer, resume_param_scheduler, map_location)
        finally:
            self._resuming_from = None
        loop = self.train_loop
        loader = getattr(loop, "dataloader", None)
        if getattr(loader, "persistent_workers", False) and loader.num_workers > 0:
            self.logger.warning(
                f"resuming from {filename} with persistent_workers=True: the workers' random "
                "streams of the interrupted run cannot be restored, so random augmentations will "
                "differ from an uninterrupted run; set persistent_workers=False for an exact resume"
            )
        if (
            isinstance(loop, EpochBasedTrainLoop)
            and not isinstance(loop, ResumableEpochBasedTrainLoop)
            and self.iter != self.epoch * len(loop.dataloader)
        ):
            # mmengine has no sampler position to restore: the epoch starts again from its first
            # batch
            self.logger.warning(
                f"{filename} was saved at iteration {self.iter}, inside epoch {self.epoch + 1} "
                f"({len(loop.dataloader)} iterations each): mmengine restarts that epoch from its "
                f"first "
                "batch, so this run will differ from an uninterrupted one; only epoch checkpoints "
                "resume exactly"
            )

    def _checkpoint_named_by_last_checkpoint(self, filename: str) -> str:
        """The checkpoint that the work dir's ``last_checkpoint`` file names, as a local path.

        That file is data lying in a folder, not a proof of trust: a URL there is refused (no
        download because of it); a relative name is read from the work dir, not from wherever
        the command runs; an empty or dangling name stops with the file at fault."""
        last = os.path.join(self.work_dir, "last_checkpoint")
        again = "pass --resume PATH, or delete that file to start afresh"
        name = filename.strip()
        if not name:
            raise ValueError(f"cannot resume: {last} is empty; {again}")
        if "://" in name:
            raise ValueError(
                f"cannot resume: {last} names {name!r}, not a local file; to resume from a URL "
                "pass it explicitly: --resume URL"
            )
        path = name if os.path.isabs(name) else os.path.join(self.work_dir, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"cannot resume: {last} names {name!r}, and {path} is not a file; {again}"
            )
        return path

    def load_checkpoint(
        self,
        filename: str,
        map_location="cpu",
        strict: bool = False,
        revise_keys=((r"^module.", ""),),
    ):
        if self._resuming_from is None:  # load_from: weights only
            return self._load_weights(filename, map_location, strict, revise_keys)
        # resume: as mmengine, but the whole training state is checked before anything is loaded,
        # and the weights must fit the model exactly
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self._check_training_state(filename, checkpoint, revise_keys)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = _load_checkpoint_to_model(model, checkpoint, True, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}")
        return checkpoint

    def _load_weights(self, filename: str, map_location, strict: bool, revise_keys):
        """``load_from``: weights only, through the project's loader (``load_weights``), so that
        a training checkpoint, a network's state dict and the METER authors' files (translated
        by METER's ``checkpoint_filter_fn``) all load; mmengine's own loader matched no key of
        the authors' files and trained on from random weights. A file none of whose tensors fit
        the model is a ValueError naming it."""
        from meter_timm.checkpoint import load_weights, state_dict_of

        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        state = state_dict_of(checkpoint, filename)
        state = _revise_keys(state, revise_keys)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        kind = load_weights(model, filename, strict=strict, state=state)
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename} (weights of the {kind})")
        return checkpoint

    def _check_training_state(self, filename: str, checkpoint, revise_keys) -> None:
        """ValueError naming ``filename`` and the first part of the training state that is missing
        or malformed: mmengine would raise an unexplained error, or resume silently inexactly."""

        def refuse(why: str, hint: str = "") -> None:
            raise ValueError(
                f"cannot resume from {filename}: {why}" + (f"; {hint}" if hint else "")
            )

        from_weights = "to start from its weights use --cfg-options load_from=PATH without --resume"
        meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
        if not isinstance(meta, dict) or not {"epoch", "iter"} <= meta.keys():
            refuse("not a training checkpoint (no 'meta' with epoch and iter)", from_weights)
        for key in ("epoch", "iter"):
            if not _is_count(meta[key]):
                refuse(f"meta[{key!r}] is {meta[key]!r}, not a count of {key}s")
        if "config" in meta:  # mmengine's resume runs this string as a Python config file
            refuse(
                "meta['config'] holds Python source that mmengine would execute on resume; "
                "meter-timm never writes it, so the file was not saved by meter-timm or was "
                "altered"
            )
        hub = checkpoint.get("message_hub")
        hub_keys = ("log_scalars", "runtime_info", "resumed_keys")
        if not isinstance(hub, dict) or not set(hub_keys) <= hub.keys():
            refuse(f"no 'message_hub' with {', '.join(hub_keys)}", from_weights)
        info = hub["runtime_info"]
        if not isinstance(info, dict):
            refuse(f"message_hub['runtime_info'] is a {type(info).__name__}, not a dict")
        # the checkpoint hook turns these into files to delete: checkpoint numbers and file names
        keep = info.get("keep_ckpt_ids", [])
        if not isinstance(keep, list) or not all(_is_count(step) for step in keep):
            refuse(f"runtime_info['keep_ckpt_ids'] is {keep!r}, not a list of checkpoint numbers")
        for key, value in info.items():
            if str(key).startswith("best_ckpt") and value is not None:
                if not isinstance(value, str) or not _BEST_NAME.fullmatch(os.path.basename(value)):
                    refuse(f"runtime_info[{key!r}] is {value!r}, not a best checkpoint's path")
        resume_optimizer, resume_schedulers = self._resume_parts
        if resume_optimizer and "optimizer" not in checkpoint:
            refuse("no 'optimizer' state (saved with save_optimizer=False?)", from_weights)
        if resume_schedulers and self.param_schedulers and "param_schedulers" not in checkpoint:
            refuse("no 'param_schedulers' state", from_weights)
        # mmengine loads a scheduler's state into its __dict__: its own attributes only
        saved = checkpoint.get("param_schedulers", [])
        groups = saved.values() if isinstance(saved, dict) else [saved]
        for states in groups:
            if not isinstance(states, list) or not all(
                isinstance(state, dict) and "optimizer" not in state for state in states
            ):
                refuse(
                    "'param_schedulers' is not a list of scheduler states (dicts without "
                    "'optimizer')"
                )
        if "random_state" not in checkpoint:
            refuse(
                "no 'random_state' (not saved by meter-timm), so the run could not continue as it "
                "would have",
                from_weights,
            )
        state = checkpoint.get("state_dict")
        if not isinstance(state, dict):
            refuse("no 'state_dict'", from_weights)
        state = _revise_keys(state, revise_keys)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        expected = model.state_dict()
        problems = [f"missing {key}" for key in expected if key not in state]
        problems += [f"unexpected {key}" for key in state if key not in expected]
        problems += [
            f"{key} has shape {tuple(state[key].shape)}, the model {tuple(value.shape)}"
            for key, value in expected.items()
            if torch.is_tensor(value)
            and torch.is_tensor(state.get(key))
            and state[key].shape != value.shape
        ]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            refuse(f"its weights do not fit the model: {'; '.join(problems[:3])}{more}")

    def setup_env(self, env_cfg: dict) -> None:
        if (
            self.distributed
            and self.launcher == "pytorch"
            and not is_distributed()
            and not torch.cuda.is_available()
        ):
            init_cpu_process_group(env_cfg.get("dist_cfg"))
        super().setup_env(env_cfg)

    def _init_model_weights(self) -> None:
        # as mmengine, but only tensors are broadcast: modules may keep non-tensor extra state
        # (the selectivity strategies), which mmengine's broadcast rejects
        model = self.model.module if is_model_wrapper(self.model) else self.model
        if hasattr(model, "init_weights"):
            model.init_weights()
            for value in model.state_dict().values():
                if torch.is_tensor(value):
                    broadcast(value)

    def wrap_model(self, model_wrapper_cfg: dict | None, model: torch.nn.Module):
        if not self.distributed or torch.cuda.is_available() or is_model_wrapper(model):
            return super().wrap_model(model_wrapper_cfg, model)
        # CPU processes: DistributedDataParallel must not get device_ids
        model = revert_sync_batchnorm(model.to("cpu"))
        cfg = dict(model_wrapper_cfg or {})
        cfg.setdefault("type", "MMDistributedDataParallel")
        cfg.setdefault("broadcast_buffers", False)
        cfg.setdefault("find_unused_parameters", self.cfg.get("find_unused_parameters", False))
        cfg.pop("device_ids", None)
        wrapped = MODEL_WRAPPERS.build(cfg, default_args=dict(module=model, device_ids=None))
        self.logger.info(
            f"{type(wrapped).__name__} on CPU: {self.world_size} processes "
            f"({torch_dist.get_backend()})"
        )
        return wrapped
