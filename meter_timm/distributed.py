"""Choosing the process-group backend, and leaving a torch.distributed run cleanly.

:func:`choose_backend`: nccl when the processes train on CUDA GPUs, gloo on CPU; a backend the
config names (``env_cfg.dist_cfg.backend``) wins.

With gloo, a process that finishes normally can still abort at interpreter exit ("terminate
called without an active exception", SIGABRT) while C++ destructors stop gloo's threads; measured
here at about 1 run in 15 for two processes, with or without ``destroy_process_group``. Once the
work is done and written, :func:`exit_process_group` therefore waits for every rank, tears the
group down, flushes Python's output, and leaves with ``os._exit`` (no static destructors).
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = [
    "check_torchrun_environment",
    "choose_backend",
    "collective_device",
    "exit_process_group",
]

#: what torchrun tells every process it starts, and ``--launcher pytorch`` reads
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def check_torchrun_environment(command: str = "train CONFIG") -> None:
    """ValueError when this process was not started by torchrun (a variable of
    :data:`TORCHRUN_VARIABLES` is missing), which ``--launcher pytorch`` needs."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"--launcher pytorch needs torchrun, which sets {', '.join(missing)} (not set here): "
            f"run `torchrun --nproc_per_node=N -m meter_timm {command} --launcher pytorch`, "
            "or leave --launcher out for one process"
        )


def choose_backend(dist_cfg: dict | None = None, cuda_available: bool | None = None) -> str:
    """The torch.distributed backend for a launch: the config's ``backend`` if it names one,
    else ``"nccl"`` with CUDA and ``"gloo"`` without.

    Raises ValueError for a config that names nccl on a machine without CUDA (nccl needs GPUs).
    """
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    named = (dist_cfg or {}).get("backend")
    if named:
        if str(named).lower() == "nccl" and not cuda_available:
            raise ValueError(
                "env_cfg.dist_cfg.backend='nccl' needs CUDA GPUs, and none is available; "
                "remove the setting (gloo is chosen on CPU) or name 'gloo'"
            )
        return str(named)
    return "nccl" if cuda_available else "gloo"


def collective_device(group=None):
    """Where tensors for a collective of ``group`` must live: this process's CUDA device under
    nccl, the CPU otherwise (gloo)."""
    import torch
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def exit_process_group(code: int = 0) -> None:
    """If a process group is running: barrier, destroy it, flush, and ``os._exit(code)``.

    Returns (doing nothing) when torch.distributed is not initialised.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
