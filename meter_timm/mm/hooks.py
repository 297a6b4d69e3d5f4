"""mmengine hooks of the selectivity training: :class:`SelectivityHook` and
:class:`RandomStateHook`."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_reduce, get_dist_info, is_distributed, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from meter_timm.mm.registry import HOOKS
from meter_timm.selectivity.bins import eq2_assignment

__all__ = ["SelectivityHook", "RandomStateHook", "find_selectivity_module", "calibration_indices"]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # mmengine's wrappers and torch's DDP/DataParallel (registered in MODEL_WRAPPERS) hold .module
    return model.module if is_model_wrapper(model) else model


def find_selectivity_module(model: torch.nn.Module):
    """The ``selectivity`` module of a (possibly DDP-wrapped) model, or None."""
    return getattr(_unwrap(model), "selectivity", None)


def calibration_indices(num_frames: int, calibrate_frames: int) -> list[int]:
    """The training frames that ``SelectivityHook`` calibrates on: ``calibrate_frames`` of the
    ``num_frames`` (all of them if fewer), evenly spaced from the first to the last."""
    count = min(calibrate_frames, num_frames)
    return [round(i * (num_frames - 1) / max(count - 1, 1)) for i in range(count)]


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Keeps the Python, numpy and torch (CPU and CUDA) random states in every checkpoint and puts
    them back when training resumes, so that a resumed run draws the same augmentations as an
    uninterrupted one. :class:`~meter_timm.mm.runner.MeterRunner` adds it automatically.

    With several processes, every rank's CPU states (Python, numpy, torch) are gathered into the
    checkpoint as well (``random_state_per_rank``: ranks seeded apart, e.g. with
    ``randomness.diff_rank_seed=True``, draw different augmentations), and each rank restores its
    own when the run resumes with as many processes; otherwise, and for CUDA, rank 0's.
    """

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self._pending: dict | None = None
        self._pending_per_rank: list | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["random_state"] = _to_weights_only(state)
        # gathered from every process by MeterRunner.save_checkpoint (this hook runs on rank 0)
        per_rank = getattr(runner, "_random_states_per_rank", None)
        if per_rank is not None:
            checkpoint["random_state_per_rank"] = per_rank

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, "_resume", False):  # not for load_from (weights only)
            self._pending = checkpoint.get("random_state")
            self._pending_per_rank = checkpoint.get("random_state_per_rank")

    def before_train(self, runner) -> None:
        # restored here, after the runner reseeds and builds its loops, right before the first
        # resumed epoch draws from the generators
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        per_rank, self._pending_per_rank = self._pending_per_rank, None
        from mmengine.dist import get_rank, get_world_size

        if per_rank is not None and len(per_rank) == get_world_size():
            unpack_cpu_random_states(per_rank[get_rank()])
        else:
            if per_rank is not None:
                runner.logger.warning(
                    f"the checkpoint holds the random states of {len(per_rank)} processes, this "
                    f"run has {get_world_size()}: every process restores rank 0's"
                )
            random.setstate(_python_state(state["python"]))
            np.random.set_state(_numpy_state(state["numpy"]))
            torch.set_rng_state(state["torch"])
        if (
            "cuda" in state
            and torch.cuda.is_available()
            and len(state["cuda"]) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(state["cuda"])


@HOOKS.register_module()
class ValidationStateHook(Hook):
    """Records in every checkpoint the training iteration of the last validation that finished,
    so that a run resumed from a checkpoint saved before its validation (the epoch checkpoint is
    written before the validation that follows it) runs that validation again, with the same
    random states, instead of skipping it. :class:`~meter_timm.mm.runner.MeterRunner` adds it.

    Marked as its ``after_val_epoch`` starts (highest priority): a checkpoint that mmengine saves
    again in that stage for a new best already holds the validation's results."""

    priority = "HIGHEST"

    def after_val_epoch(self, runner, metrics=None) -> None:
        if getattr(runner, "_train_loop", None) is not None and not isinstance(
            runner._train_loop, dict
        ):  # a validation inside training, not `runner.val()` alone
            runner._validated_iter = runner.iter

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # 0: no validation has finished yet (None, in a checkpoint without the key: unknown)
        validated = getattr(runner, "_validated_iter", None)
        checkpoint.setdefault("meta", {})["validated_iter"] = 0 if validated is None else validated

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, "_resume", False):
            runner._validated_iter = (checkpoint.get("meta") or {}).get("validated_iter")


def _to_weights_only(state: dict) -> dict:
    """Random states as tensors, ints and lists only, so the checkpoint stays
    weights_only-readable."""
    version, internal, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    out = {
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": state["torch"],
    }
    if "cuda" in state:
        out["cuda"] = list(state["cuda"])
    return out


def pack_cpu_random_states(state: dict) -> torch.Tensor:
    """The Python, numpy and torch CPU random states of ``state`` (as ``random.getstate()`` etc.
    return them) as one float64 tensor of fixed length, which processes can gather (all values
    are integers below 2**53 or floats, so float64 holds them exactly)."""
    version, internal, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    if kind != "MT19937":
        raise ValueError(f"numpy random state of kind {kind!r}: expected 'MT19937'")
    head = [version, gauss is not None, 0.0 if gauss is None else gauss, pos, has_gauss, cached]
    return torch.cat(
        [
            torch.tensor(head, dtype=torch.float64),
            torch.tensor(internal, dtype=torch.float64),
            torch.from_numpy(np.asarray(keys, dtype=np.float64)),
            state["torch"].to(torch.float64),
        ]
    )


def unpack_cpu_random_states(packed: torch.Tensor) -> None:
    """Set the Python, numpy and torch CPU random states from :func:`pack_cpu_random_states`."""
    values = packed.tolist()
    version, has_python_gauss, gauss, pos, has_gauss, cached = values[:6]
    internal = tuple(int(v) for v in values[6 : 6 + 625])
    keys = np.array(values[6 + 625 : 6 + 625 + 624], dtype=np.uint32)
    random.setstate((int(version), internal, gauss if has_python_gauss else None))
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(packed[6 + 625 + 624 :].to(torch.uint8))


def _python_state(s: dict):
    return (s["version"], tuple(int(v) for v in s["internal"].tolist()), s["gauss"])


def _numpy_state(s: dict):
    return (s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"])


def _check_dissection_spec(layers, num_bins, strategy) -> None:
    """ValueError naming the hook for a malformed ``layers`` list, ``num_bins`` or an unknown
    ``strategy`` (or parameter), at config build time."""
    from meter_timm.selectivity.loss import normalize_layers
    from meter_timm.strategies.catalog import check_strategy_spec

    try:
        if layers is not None:
            normalize_layers(layers)
        if num_bins is not None and int(num_bins) < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        check_strategy_spec(strategy)
    except (KeyError, ValueError) as err:
        raise ValueError(f"SelectivityHook: {err}") from None


@HOOKS.register_module()
class SelectivityHook(Hook):
    """Drives depth-selectivity training and measurement around the model's ``selectivity`` module.

    The model (e.g. :class:`~meter_timm.mm.model.DepthEstimator` with
    ``selectivity=dict(type="SelectivityLoss", ...)``) owns the loss and adds it to its loss dict;
    this hook configures it, observes, and logs:

    * lambda warm-up: lambda rises linearly from ``warmup_start`` x lambda to lambda over the first
      ``warmup_iters`` iterations (the current value is logged as ``train/sel_lambda``);
    * calibration: before the first training step of a run (not of a resumed one), learnable
      strategies are fitted on ``calibrate_frames`` training frames, with the weights training
      starts from, in eval mode (:meth:`SelectivityLoss.calibrate`): the ``learned`` strategy
      fits its edges and matches its units there, then stays frozen. The random states are put
      back afterwards, so the training draws the same data as a run without calibration;
    * refits: every ``refit_interval`` iterations after ``refit_after`` iterations it calls
      ``selectivity.refit()`` (for strategies that keep learning during training);
    * logs: the per-layer selectivity the loss reports (keys ``sel/<layer>``) are averaged over the
      processes of a distributed run before mmengine's logger sees them;
    * dissection: after each validation epoch (every ``dissect_interval``-th), the responses of the
      ``layers`` measured during that validation (one pass, summed over the processes) give a
      dissection report and plots in ``<work_dir>/dissection/epoch_<N>/``; their paths and the
      per-layer selectivity are logged and stored in the message hub (``selectivity_report``);
    * checkpoints: its own state (target lambda, refit count, last report) travels in the
      checkpoint under ``"selectivity_hook"``, so a resumed run continues exactly.

    Args:
        warmup_iters (int): iterations of the linear lambda warm-up; 0 disables it. Default: 0.
        warmup_start (float): lambda factor at iteration 0 of the warm-up. Default: 0.0.
        refit_interval (int, optional): iterations between refits; None disables them (a
            learnable strategy may still refit on its own schedule). Default: None.
        refit_after (int): no refit before this iteration. Default: 0.
        dissect (bool): write the dissection report after validation. Default: True.
        dissect_interval (int): dissect after every N-th validation. Default: 1.
        layers (list[str | dict], optional): layers to dissect; default: the layers of the model's
            selectivity module. Needed when the model has no selectivity module (a baseline).
        num_bins (int, optional): depth bins of the dissection; default: each layer's own.
        strategy (str): bin edges of the dissection when ``num_bins`` is given. Default: "uniform".
        min_depth (float): Default: 0.0. max_depth (float): Default: 10.0.
        plot_units (list[int], optional): units whose response curves are plotted; default the
            seed's choice scaled to the layer width (units 12, 24, 40 of 48).
        reduce_logs (bool): average the logged selectivity over processes. Default: True.
        calibrate_frames (int): training frames for the calibration of learnable strategies
            (evenly spaced over the training set); 0 disables it. Default: 256.
        calibrate_batch_size (int): batch size of the calibration passes. Default: 8.
    """

    priority = "HIGHEST"  # sees the train outputs before RuntimeInfoHook logs them

    def __init__(
        self,
        warmup_iters: int = 0,
        warmup_start: float = 0.0,
        refit_interval: int | None = None,
        refit_after: int = 0,
        dissect: bool = True,
        dissect_interval: int = 1,
        layers: Sequence | None = None,
        num_bins: int | None = None,
        strategy: str = "uniform",
        min_depth: float = 0.0,
        max_depth: float = 10.0,
        plot_units: Sequence[int] | None = None,
        reduce_logs: bool = True,
        calibrate_frames: int = 256,
        calibrate_batch_size: int = 8,
    ) -> None:
        if warmup_iters < 0 or refit_after < 0 or dissect_interval < 1:
            raise ValueError(
                "SelectivityHook: warmup_iters and refit_after must be >= 0, dissect_interval >= 1"
            )
        if refit_interval is not None and refit_interval < 1:
            raise ValueError(
                f"SelectivityHook: refit_interval must be >= 1 or None, got {refit_interval}"
            )
        self.warmup_iters = int(warmup_iters)
        self.warmup_start = float(warmup_start)
        self.refit_interval = refit_interval
        self.refit_after = int(refit_after)
        self.dissect = bool(dissect)
        self.dissect_interval = int(dissect_interval)
        self.layers = list(layers) if layers is not None else None
        self.num_bins = num_bins
        self.strategy = strategy
        _check_dissection_spec(self.layers, num_bins, strategy)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.plot_units = list(plot_units) if plot_units is not None else None
        self.reduce_logs = bool(reduce_logs)
        if calibrate_frames < 0 or calibrate_batch_size < 1:
            raise ValueError(
                "SelectivityHook: calibrate_frames must be >= 0 and calibrate_batch_size >= 1"
            )
        self.calibrate_frames = int(calibrate_frames)
        self.calibrate_batch_size = int(calibrate_batch_size)
        # state kept in checkpoints
        self.calibrated = False
        self.target_lambda: float | None = None
        self.refits = 0
        self.val_epochs = 0
        self.last_report: dict = {}
        # per-validation measurement
        self._dissector = None

    # ------------------------------------------------------------------ training
    def before_run(self, runner) -> None:
        """A dissection layer the model does not have fails now, not after an epoch."""
        from meter_timm.selectivity.capture import resolve_module

        model = _unwrap(runner.model)
        target = getattr(model, "backbone", model)
        for spec in self.layers or ():
            name = spec if isinstance(spec, str) else spec["name"]
            try:
                resolve_module(target, name)
            except KeyError as err:
                raise ValueError(f"SelectivityHook: layers: {err}") from None

    def before_train(self, runner) -> None:
        module = find_selectivity_module(runner.model)
        if module is not None and self.target_lambda is None:
            self.target_lambda = float(module.lam)
        elif module is not None and float(module.lam) != self.target_lambda:
            runner.logger.warning(
                f"SelectivityHook: resuming with the checkpoint's lambda {self.target_lambda:g}; "
                f"the config's {float(module.lam):g} is not used (the warm-up goes on towards "
                "the checkpoint's)"
            )
        if module is not None and not self.calibrated and self.calibrate_frames:
            self._calibrate(runner, module)
        self.calibrated = True

    def _calibrate(self, runner, module) -> None:
        """Fit the learnable strategies on training frames before training (see the class doc)."""
        from mmengine.dataset import pseudo_collate

        from meter_timm.data.resize import resize_depth_nearest
        from meter_timm.strategies import get_strategy_class

        learnable = [
            layer["name"]
            for layer in getattr(module, "layers", [])
            if get_strategy_class(layer.get("strategy") or "uniform").learnable
        ]
        if not learnable:
            return
        model = _unwrap(runner.model)
        dataset = runner.train_dataloader.dataset
        indices = calibration_indices(len(dataset), self.calibrate_frames)
        count = len(indices)
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        was_training = model.training
        try:
            batches = []
            for start in range(0, count, self.calibrate_batch_size):
                batch = pseudo_collate(
                    [dataset[i] for i in indices[start : start + self.calibrate_batch_size]]
                )
                data = model.data_preprocessor(batch, False)
                inputs = data["inputs"]
                depth = torch.stack(
                    [
                        resize_depth_nearest(s.gt_depth.float(), inputs.shape[-2:])
                        for s in data["data_samples"]
                    ]
                )
                batches.append((inputs, depth))
            model.eval()
            changed = module.calibrate(model.predict_depth, batches)
        finally:
            model.train(was_training)
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
        for name in learnable:
            strategy = module.strategy(name)
            moved = int(
                (
                    strategy.assignment() != eq2_assignment(strategy.num_units, strategy.num_bins)
                ).sum()
            )
            runner.logger.info(
                f"SelectivityHook: calibrated {name} ({strategy.name}) on {count} training frames: "
                f"{'changed' if changed.get(name) else 'unchanged'}, "
                f"{moved} of {strategy.num_units} "
                f"units away from Eq. 2, edges {[round(e, 3) for e in strategy.edges().tolist()]}"
            )

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        module = find_selectivity_module(runner.model)
        if module is None or self.target_lambda is None:
            return
        lam = self.current_lambda(runner.iter)
        module.lam = lam
        runner.message_hub.update_scalar("train/sel_lambda", lam)

    def current_lambda(self, iteration: int) -> float:
        """Lambda at a (0-based) training iteration under the warm-up."""
        if self.target_lambda is None:
            raise RuntimeError("SelectivityHook: lambda is known once training has started")
        if self.warmup_iters <= 0 or iteration >= self.warmup_iters:
            return self.target_lambda
        frac = self.warmup_start + (1.0 - self.warmup_start) * iteration / self.warmup_iters
        return self.target_lambda * frac

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if outputs and self.reduce_logs and is_distributed():
            keys = [
                k
                for k, v in outputs.items()
                if torch.is_tensor(v) and v.numel() == 1 and k.startswith("sel")
            ]
            if keys:  # one collective for all of them
                values = torch.stack([outputs[k].detach().float().reshape(()) for k in keys])
                all_reduce(values, op="mean")
                for key, value in zip(keys, values):
                    outputs[key] = value
        module = find_selectivity_module(runner.model)
        if module is None or self.refit_interval is None:
            return
        # not Hook.every_n_train_iters: the schedule counts from refit_after (every n iterations
        # after it), which every_n_train_iters (multiples of n) cannot offset
        done = runner.iter + 1  # iterations finished, counting this one
        if done > self.refit_after and (done - self.refit_after) % self.refit_interval == 0:
            result = module.refit()
            changed = any(result.values()) if isinstance(result, dict) else bool(result)
            self.refits += 1
            runner.message_hub.update_scalar("train/sel_refits", self.refits)
            if changed:
                runner.logger.info(
                    f"SelectivityHook: refit {self.refits} changed the assignment "
                    f"(iteration {done})"
                )

    # ------------------------------------------------------------------ dissection
    def _dissection_layers(self, runner) -> list[dict]:
        module = find_selectivity_module(runner.model)
        specs = self.layers
        if specs is None:
            if module is None:
                return []
            specs = list(module.layers)
        out = []
        for spec in specs:
            # a trained layer's own spec: the dissector then scores its trained strategy itself
            spec = dict(name=spec) if isinstance(spec, str) else dict(spec)
            if self.num_bins is not None:
                spec["num_bins"] = self.num_bins
                spec["strategy"] = self.strategy
            out.append(spec)
        return out

    def before_val_epoch(self, runner) -> None:
        self._dissector = None
        if not self.dissect or (self.val_epochs + 1) % self.dissect_interval:
            return
        layers = self._dissection_layers(runner)
        if not layers:
            return
        from meter_timm.selectivity.dissection import ValidationDissector

        rank, world_size = get_dist_info()
        self._dissector = ValidationDissector(
            _unwrap(runner.model),
            layers,
            self.min_depth,
            self.max_depth,
            dataset_size=len(runner.val_dataloader.dataset) if world_size > 1 else None,
            rank=rank,
            world_size=world_size,
        )

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._dissector is not None:
            self._dissector.observe(data_batch, outputs)

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self.val_epochs += 1
        dissector, self._dissector = self._dissector, None
        if dissector is None:
            return
        out_dir = Path(runner.work_dir) / "dissection" / f"epoch_{runner.epoch}"
        report = dissector.finish(
            out_dir,
            plot_units=self.plot_units,
            write=is_main_process(),
            epoch=runner.epoch,
            metrics=metrics,
        )
        self.last_report = report
        runner.message_hub.update_info("selectivity_report", report)
        # val/sel/<layer> is what training logs as sel/<layer> (the index against the assigned
        # bins); val/sel_preferred/<layer> the index against each unit's preferred bin
        for layer, value in report.get("selectivity_assigned", {}).items():
            if value is not None:
                runner.message_hub.update_scalar(f"val/sel/{layer}", value)
        for layer, value in report.get("selectivity", {}).items():
            runner.message_hub.update_scalar(f"val/sel_preferred/{layer}", value)
        if is_main_process():
            summary = ", ".join(f"{k} {v:.4f}" for k, v in report.get("selectivity", {}).items())
            runner.logger.info(f"SelectivityHook: dissection of epoch {runner.epoch}: {summary}")
            for path in report.get("files", []):
                runner.logger.info(f"SelectivityHook: wrote {path}")
            self._add_images(runner, report.get("files", []))

    @staticmethod
    def _add_images(runner, files: Sequence[str]) -> None:
        """The plots also go to mmengine's visualizer (vis_data/ with LocalVisBackend)."""
        visualizer = getattr(runner, "visualizer", None)
        if visualizer is None:
            return
        import matplotlib.image as mpimg

        for path in files:
            if not str(path).endswith(".png"):
                continue
            image = mpimg.imread(path)
            image = (
                (image[..., :3] * 255).astype(np.uint8)
                if image.dtype != np.uint8
                else image[..., :3]
            )
            visualizer.add_image(f"dissection_{Path(path).stem}", image, step=runner.epoch)

    # ------------------------------------------------------------------ checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["selectivity_hook"] = {
            "target_lambda": self.target_lambda,
            "refits": self.refits,
            "calibrated": self.calibrated,
            "val_epochs": self.val_epochs,
            "last_report": _weights_only_readable(self.last_report),
        }

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get("selectivity_hook")
        if not state or not getattr(runner, "_resume", False):
            return
        self.target_lambda = state.get("target_lambda")
        self.refits = int(state.get("refits", 0))
        self.calibrated = bool(state.get("calibrated", True))  # never recalibrate a resumed run
        self.val_epochs = int(state.get("val_epochs", 0))
        self.last_report = dict(state.get("last_report") or {})


def _weights_only_readable(value: Any) -> Any:
    """``value`` as str/int/float/bool/None, lists and dicts only (weights_only-readable in a
    checkpoint)."""
    if isinstance(value, dict):
        return {str(k): _weights_only_readable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_weights_only_readable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if torch.is_tensor(value):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value
