"""No code runs from any checkpoint: a payload planted in the run's own work dir is refused on
resume through the real CLI, and an honest checkpoint still resumes (budget: ~25 s on 2 cores)."""

from __future__ import annotations

import builtins
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from _training import build_runner, make_tiny_data, tiny_config
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from meter_timm.checkpoint import CheckpointReadError, load_checkpoint_file
from meter_timm.cli import main
from meter_timm.mm.checkpoint import load_from_local_safe, url_cache_path


class _CreatesFile:
    """Unpickling this with full pickle opens (creates) ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


class _ReachesForAttribute:
    """A pickled ``getattr`` on an allowlisted type that is not a HistoryBuffer statistic."""

    def __init__(self, owner=np.ndarray, name="tofile"):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


class _ObjectArrayViaDtypeCall:
    """Pickles as an object array whose dtype comes from calling ``numpy.dtype("O")``."""

    class _Dtype:
        def __reduce__(self):
            return np.dtype, ("O", False, True)

    def __reduce__(self):
        multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
        state = (1, (2,), self._Dtype(), False, ["a", {"k": 1}])
        return multiarray._reconstruct, (np.ndarray, (0,), b"b"), state


def test_reader_allows_exactly_mmengine_state(tmp_path):
    # tensors, numpy values and a real message hub (HistoryBuffer + its statistics methods) load
    hub = MessageHub.get_instance("checkpoint_safety_reader")
    hub.update_scalar("train/loss", np.float64(1.5))
    hub.update_scalar("train/loss", 2.5)
    torch.save(
        {
            "state_dict": {"w": torch.ones(2)},
            "meta": {"seed": np.int64(3), "stats": np.arange(3.0)},
            "message_hub": hub.state_dict(),
        },
        tmp_path / "honest.pth",
    )
    loaded = load_from_local_safe(str(tmp_path / "honest.pth"))
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2)) and loaded["meta"]["seed"] == 3
    assert loaded["message_hub"]["log_scalars"]["train/loss"].mean() == 2.0
    # anything else is refused before it runs, naming the file and the type
    marker = tmp_path / "created_by_payload"
    for name, payload, refused in [
        ("open.pth", _CreatesFile(marker), "io.open"),
        ("getattr.pth", _ReachesForAttribute(), "getattr(ndarray, 'tofile')"),
        # HistoryBuffer itself is allowed, but only its statistics methods may be looked up on it
        (
            "class.pth",
            _ReachesForAttribute(HistoryBuffer, "__class__"),
            "getattr(HistoryBuffer, '__class__')",
        ),
        ("objects.pth", np.array([{}], dtype=object), "numpy object dtype"),
        # the same array pickled through the allowed numpy.dtype("O") call, not the dtype class
        ("object_dtype.pth", _ObjectArrayViaDtypeCall(), "numpy object dtype"),
    ]:
        torch.save({"meta": {"x": payload}}, tmp_path / name)
        with pytest.raises(CheckpointReadError) as info:
            load_checkpoint_file(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and str(tmp_path / name) in message and refused in message, (
            message
        )
    assert not marker.exists()


def test_bad_files_are_named_in_one_line(tmp_path):
    honest = tmp_path / "honest.pth"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, honest)
    (tmp_path / "truncated.pth").write_bytes(honest.read_bytes()[:700])
    (tmp_path / "notes.pth").write_text("not a checkpoint\n")
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).bytes(512))
    for name in ("truncated.pth", "notes.pth", "random.pth"):
        with pytest.raises(CheckpointReadError, match="cannot read checkpoint .*" + name) as info:
            load_checkpoint_file(tmp_path / name)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "checkpoint",
    [
        {"w": torch.tensor([1.0, float("inf")])},  # inf as well as NaN
        {"state_dict": {"w": torch.tensor([float("-inf")])}},  # mmengine
        {"model": {"w": torch.tensor([float("nan")])}},  # timm's training checkpoints
    ],
)
def test_non_finite_weights_are_refused(tmp_path, checkpoint):
    torch.save(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(CheckpointReadError, match="tensor 'w' has 1 non-finite"):
        load_checkpoint_file(tmp_path / "bad.pth")


@pytest.fixture
def http_files(tmp_path, monkeypatch):
    """(folder, base URL): files put in the folder are served over HTTP on 127.0.0.1; torch's hub
    cache (where mmengine's http loader keeps downloads) is tmp_path / "hub"."""

    class QuietHandler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path / "served"), **kwargs)

        def log_message(self, *args):
            pass

    (tmp_path / "served").mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    yield tmp_path / "served", f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_every_checkpoint_scheme_goes_through_the_one_reader(tmp_path, http_files, monkeypatch):
    served, url = http_files
    marker = tmp_path / "created_by_payload"
    torch.save({"state_dict": {"w": torch.ones(3)}}, served / "honest.pth")
    torch.save({"meta": {"x": _CreatesFile(marker)}}, served / "payload.pth")
    # http(s): downloaded into the hub cache, then read by the one reader
    loaded = CheckpointLoader.load_checkpoint(f"{url}/honest.pth")
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    assert url_cache_path(f"{url}/honest.pth").is_file()
    assert url_cache_path(f"{url}/honest.pth").is_relative_to(tmp_path / "hub" / "checkpoints")
    with pytest.raises(CheckpointReadError, match="refused checkpoint .*payload.pth.*io.open"):
        _load_checkpoint(f"{url}/payload.pth")  # mmengine's init_cfg / load_from entry point
    # a payload planted in the hub cache is read by the same rules (mmengine would unpickle it)
    url_cache_path(f"{url}/p2.pth").parent.mkdir(parents=True)
    torch.save({"meta": {"x": _CreatesFile(marker)}}, url_cache_path(f"{url}/p2.pth"))
    with pytest.raises(CheckpointReadError, match="refused checkpoint .*p2.pth"):
        CheckpointLoader.load_checkpoint(f"{url}/p2.pth")
    with pytest.raises(CheckpointReadError, match=f"cannot download checkpoint {url}/absent.pth"):
        CheckpointLoader.load_checkpoint(f"{url}/absent.pth")
    # every other scheme, mmengine's own and one a third party registers later, is refused
    monkeypatch.setattr(CheckpointLoader, "_schemes", dict(CheckpointLoader._schemes))
    CheckpointLoader.register_scheme("evil://", loader=lambda name, map_location=None: 1 / 0)
    for path in (
        "open-mmlab://resnet50_v1c",
        "torchvision://resnet18",
        "modelzoo://resnet18",
        "mmcls://resnet50",
        "s3://bucket/epoch_1.pth",
        "pavi://model/1",
        "ftp://host/epoch_1.pth",
        "evil://x",
    ):
        with pytest.raises(CheckpointReadError, match="local files and http.s. URLs only") as info:
            CheckpointLoader.load_checkpoint(path)
        assert path in str(info.value)
    assert not marker.exists()


def test_urls_with_the_same_file_name_do_not_share_a_download(http_files):
    served, url = http_files
    for folder, value in (("a", 1.0), ("b", 2.0)):
        (served / folder).mkdir()
        torch.save({"state_dict": {"w": torch.full((2,), value)}}, served / folder / "x.pth")
    first = CheckpointLoader.load_checkpoint(f"{url}/a/x.pth")
    second = CheckpointLoader.load_checkpoint(f"{url}/b/x.pth")  # not a's cached copy
    assert first["state_dict"]["w"].tolist() == [1.0, 1.0]
    assert second["state_dict"]["w"].tolist() == [2.0, 2.0]


def _write_config(tmp_path, work_dir, epochs):
    data = make_tiny_data(tmp_path / "data", train=8, val=4)
    cfg = tiny_config(data, work_dir, epochs=epochs, batch_size=4, hook=dict(dissect=False))
    cfg.train_dataloader.dataset.indices = 8  # 2 iterations per epoch
    path = tmp_path / f"tiny_{epochs}.py"
    cfg.dump(str(path))
    return cfg, path


def _cli_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return code, err[-1] if err else ""


def _resume_error(capsys, config, work_dir, *checkpoint):
    """``meter-timm train CONFIG --work-dir W --resume [CHECKPOINT]``: (exit code, last line)."""
    argv = ["train", str(config), "--work-dir", str(work_dir), "--resume"]
    return _cli_error(capsys, argv + [str(c) for c in checkpoint])


def test_payload_in_the_work_dir_never_runs_and_honest_checkpoints_resume(
    tmp_path, capsys, http_files
):
    work_dir = tmp_path / "run"
    cfg, _ = _write_config(tmp_path, work_dir, epochs=1)
    build_runner(cfg).train()
    honest = work_dir / "epoch_1.pth"
    assert (work_dir / "last_checkpoint").read_text() == str(honest)
    shutil.copy(honest, tmp_path / "honest_copy.pth")

    # the attacker rewrites the run's own checkpoint with a payload in its meta data
    checkpoint = load_checkpoint_file(honest)
    marker = tmp_path / "created_by_payload"
    checkpoint["meta"]["note"] = _CreatesFile(marker)
    torch.save(checkpoint, honest)
    _, config = _write_config(tmp_path, work_dir, epochs=2)
    for explicit in ((honest,), ()):  # explicit, and through last_checkpoint
        code, last = _resume_error(capsys, config, work_dir, *explicit)
        assert code == 2 and not marker.exists()
        assert last.startswith("meter-timm train: error: refused checkpoint ")
        assert str(honest) in last and "io.open" in last
    # a planted last_checkpoint pointing outside the work dir is read by the same rules
    elsewhere = tmp_path / "elsewhere.pth"
    torch.save({"meta": {"epoch": 1, "iter": 2, "x": _CreatesFile(marker)}}, elsewhere)
    (work_dir / "last_checkpoint").write_text(str(elsewhere))
    code, last = _resume_error(capsys, config, work_dir)
    assert code == 2 and not marker.exists() and str(elsewhere) in last and "io.open" in last
    # ... and when it names a URL, nothing is downloaded because of it
    served, url = http_files
    shutil.copy(elsewhere, served / "elsewhere.pth")
    (work_dir / "last_checkpoint").write_text(f"{url}/elsewhere.pth")
    code, last = _resume_error(capsys, config, work_dir)
    assert code == 2 and not marker.exists() and "not a local file" in last
    assert str(work_dir / "last_checkpoint") in last and "--resume URL" in last
    assert not any((tmp_path / "hub").rglob("elsewhere.pth"))
    # an explicit --resume URL is downloaded and read by the one reader
    code, last = _resume_error(capsys, config, work_dir, f"{url}/elsewhere.pth")
    assert code == 2 and not marker.exists() and "elsewhere.pth" in last and "io.open" in last

    # a state dict is not a training checkpoint
    torch.save(checkpoint["state_dict"], tmp_path / "weights.pth")
    code, last = _resume_error(capsys, config, work_dir, tmp_path / "weights.pth")
    assert (
        code == 2 and "cannot resume from" in last and "weights.pth" in last and "load_from" in last
    )

    # the honest checkpoint resumes and training goes on to epoch 2
    shutil.copy(tmp_path / "honest_copy.pth", honest)
    (work_dir / "last_checkpoint").write_text(str(honest))
    assert main(["train", str(config), "--work-dir", str(work_dir), "--resume"]) == 0
    resumed = load_checkpoint_file(work_dir / "epoch_2.pth")
    assert resumed["meta"]["epoch"] == 2 and resumed["meta"]["iter"] == 4
    assert not marker.exists()


def test_resume_refuses_incomplete_training_state_naming_file_and_part(tmp_path, capsys):
    # each file lacks one part of the training state: mmengine resumed silently (no weights, no
    # optimizer, no schedulers: not the run it was) or failed with an unexplained error
    work_dir = tmp_path / "run"
    cfg, _ = _write_config(tmp_path, work_dir, epochs=1)
    build_runner(cfg).train()
    honest = load_checkpoint_file(work_dir / "epoch_1.pth")
    _, config = _write_config(tmp_path, work_dir, epochs=2)
    first_key = next(iter(honest["state_dict"]))
    edits = {
        "no_hub": (lambda c: c.update(message_hub={}), "no 'message_hub' with log_scalars"),
        "epoch_text": (lambda c: c["meta"].update(epoch="one"), "meta['epoch'] is 'one'"),
        "no_optimizer": (lambda c: c.pop("optimizer"), "no 'optimizer' state"),
        "no_schedulers": (lambda c: c.pop("param_schedulers"), "no 'param_schedulers' state"),
        "no_random": (lambda c: c.pop("random_state"), "no 'random_state'"),
        "no_weights": (lambda c: c.pop("state_dict"), "no 'state_dict'"),
        "missing_key": (lambda c: c["state_dict"].pop(first_key), f"missing {first_key}"),
        "bad_shape": (
            lambda c: c["state_dict"].update({first_key: torch.zeros(1, 2, 3)}),
            f"{first_key} has shape (1, 2, 3), the model",
        ),
    }
    for name, (edit, expected) in edits.items():
        checkpoint = load_checkpoint_file(work_dir / "epoch_1.pth")
        edit(checkpoint)
        torch.save(checkpoint, tmp_path / f"{name}.pth")
        code, last = _resume_error(capsys, config, work_dir, f"{tmp_path / name}.pth")
        assert code == 2 and f"cannot resume from {tmp_path / name}.pth: " in last, (name, last)
        assert expected in last, (name, last)
    (work_dir / "last_checkpoint").write_text("\n")
    code, last = _resume_error(capsys, config, work_dir)
    assert code == 2 and f"{work_dir / 'last_checkpoint'} is empty" in last
    assert not (work_dir / "epoch_2.pth").exists() and honest["meta"]["epoch"] == 1


def test_resume_never_runs_or_deletes_what_the_checkpoint_names(tmp_path, capsys):
    # mmengine's resume executes meta['config'] as a Python config, and its checkpoint hook
    # deletes the runtime_info's best_ckpt and keep_ckpt_ids files: plain strings and lists
    # that weights_only=True lets through
    work_dir = tmp_path / "run"
    cfg, _ = _write_config(tmp_path, work_dir, epochs=1)
    build_runner(cfg).train()
    honest = work_dir / "epoch_1.pth"
    _, config = _write_config(tmp_path, work_dir, epochs=2)
    marker = tmp_path / "created_by_config"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    (work_dir / "epoch_x").mkdir()  # so that epoch_x/../../victim/keep.txt resolves
    edits = {
        "config": (
            lambda c: c["meta"].update(config=f"x = open({str(marker)!r}, 'w')"),
            "meta['config'] holds Python source",
        ),
        "keep_ids": (
            lambda c: c["message_hub"]["runtime_info"].update(
                keep_ckpt_ids=["x/../../victim/keep", 1]
            ),
            "runtime_info['keep_ckpt_ids'] is ['x/../../victim/keep', 1], not a list of",
        ),
        "best_dict": (
            lambda c: c["message_hub"]["runtime_info"].update(best_ckpt={"a": 1}),
            "runtime_info['best_ckpt'] is {'a': 1}, not a best checkpoint's path",
        ),
        "best_name": (
            lambda c: c["message_hub"]["runtime_info"].update(best_ckpt_rmse=str(victim)),
            "runtime_info['best_ckpt_rmse'] is ",
        ),
    }
    for name, (edit, expected) in edits.items():
        checkpoint = load_checkpoint_file(honest)
        edit(checkpoint)
        torch.save(checkpoint, tmp_path / f"{name}.pth")
        code, last = _resume_error(capsys, config, work_dir, tmp_path / f"{name}.pth")
        assert code == 2 and f"cannot resume from {tmp_path / name}.pth: " in last, (name, last)
        assert expected in last, (name, last)
    assert not marker.exists() and (victim / "keep.txt").read_text() == "precious"


def test_resumed_best_checkpoint_outside_the_run_is_never_deleted(tmp_path):
    # a best checkpoint named like one but in another folder (planted, or the run was moved):
    # the resumed run saves its new best without deleting the old path
    work_dir = tmp_path / "run"
    cfg, _ = _write_config(tmp_path, work_dir, epochs=1)
    cfg.default_hooks.checkpoint.update(save_best="rmse", rule="less")
    build_runner(cfg).train()
    [own_best] = work_dir.glob("best_rmse_epoch_1.pth")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "best_rmse_epoch_1.pth").write_text("precious")
    checkpoint = load_checkpoint_file(work_dir / "epoch_1.pth")
    assert checkpoint["message_hub"]["runtime_info"]["best_ckpt"] == str(own_best)
    checkpoint["message_hub"]["runtime_info"].update(
        best_ckpt=str(victim / "best_rmse_epoch_1.pth"), best_score=1e9
    )
    torch.save(checkpoint, work_dir / "epoch_1.pth")
    cfg2, _ = _write_config(tmp_path, work_dir, epochs=2)
    cfg2.default_hooks.checkpoint.update(save_best="rmse", rule="less")
    cfg2.resume = True
    build_runner(cfg2).train()
    assert (victim / "best_rmse_epoch_1.pth").read_text() == "precious"
    assert (work_dir / "best_rmse_epoch_2.pth").is_file()  # a better rmse than 1e9 was saved


def test_last_checkpoint_names_a_file_relative_to_the_work_dir(tmp_path, capsys, monkeypatch):
    work_dir = tmp_path / "run"
    cfg, _ = _write_config(tmp_path, work_dir, epochs=1)
    build_runner(cfg).train()
    _, config = _write_config(tmp_path, work_dir, epochs=2)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the command runs from another folder
    (work_dir / "last_checkpoint").write_text("missing.pth")
    code, last = _resume_error(capsys, config, work_dir)
    assert code == 2 and str(work_dir / "last_checkpoint") in last
    assert "'missing.pth'" in last and str(work_dir / "missing.pth") in last
    (work_dir / "last_checkpoint").write_text("epoch_1.pth")
    assert main(["train", str(config), "--work-dir", str(work_dir), "--resume"]) == 0
    assert load_checkpoint_file(work_dir / "epoch_2.pth")["meta"]["epoch"] == 2


def _check_training_state(checkpoint, model, resume_parts=(True, True), schedulers=True):
    """``MeterRunner._check_training_state`` of a runner with ``model`` (no runner built)."""
    from types import SimpleNamespace

    from meter_timm.mm.runner import MeterRunner

    runner = SimpleNamespace(
        _resume_parts=resume_parts, param_schedulers=[object()] if schedulers else None, model=model
    )
    MeterRunner._check_training_state(runner, "run/x.pth", checkpoint, ((r"^module\.", ""),))


def _training_state(model, **changes):
    checkpoint = dict(
        meta={"epoch": 0, "iter": 3},  # an iteration checkpoint inside the first epoch
        message_hub={"log_scalars": {}, "runtime_info": {}, "resumed_keys": {}},
        optimizer={},
        param_schedulers=[],
        random_state={},
        state_dict=dict(model.state_dict()),
    )
    checkpoint.update(changes)
    return checkpoint


def test_training_state_check_accepts_what_the_run_needs_and_no_more():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    _check_training_state(_training_state(model), model)
    # what mmengine's checkpoint hook keeps: checkpoint numbers and best checkpoint paths
    info = {"keep_ckpt_ids": [1, 2], "best_ckpt": "/w/best_rmse_epoch_2.pth", "best_ckpt_a1": None}
    hub = {"log_scalars": {}, "runtime_info": info, "resumed_keys": {}}
    _check_training_state(_training_state(model, message_hub=hub), model)
    # schedulers as a list, or a dict of lists (one per optimizer)
    states = [{"last_step": 3, "base_values": [0.1]}]
    _check_training_state(_training_state(model, param_schedulers=states), model)
    _check_training_state(_training_state(model, param_schedulers={"a": states, "b": []}), model)
    # DDP's "module." prefixes are revised away, as the load does
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    _check_training_state(_training_state(model, state_dict=prefixed), model)
    # parts the run does not resume need not be there
    no_optimizer = _training_state(model)
    no_optimizer.pop("optimizer")
    _check_training_state(no_optimizer, model, resume_parts=(False, True))
    no_schedulers = _training_state(model)
    no_schedulers.pop("param_schedulers")
    _check_training_state(no_schedulers, model, schedulers=False)
    _check_training_state(no_schedulers, model, resume_parts=(True, False))


def test_training_state_check_names_what_is_wrong():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"run/x.pth: meta\['epoch'\] is True, not a count"):
        _check_training_state(_training_state(model, meta={"epoch": True, "iter": 3}), model)
    state = dict(model.state_dict(), **{"2.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"do not fit the model: unexpected 2\.weight$"):
        _check_training_state(_training_state(model, state_dict=state), model)
    # the first three problems, and how many more
    four_missing = r"missing 0\.weight; .*; missing 1\.weight \(and 1 more\)"
    with pytest.raises(ValueError, match=four_missing):
        _check_training_state(_training_state(model, state_dict={}), model)
    for info in ({"keep_ckpt_ids": [1, True]}, {"keep_ckpt_ids": (1, 2)}, {"best_ckpt": 3}):
        hub = {"log_scalars": {}, "runtime_info": info, "resumed_keys": {}}
        with pytest.raises(ValueError, match=r"run/x.pth: runtime_info\['(keep|best)_ckpt"):
            _check_training_state(_training_state(model, message_hub=hub), model)
    for schedulers in ([{"optimizer": {}}], {"lr": [3]}, "x"):
        with pytest.raises(ValueError, match=r"run/x.pth: 'param_schedulers' is not a list of"):
            _check_training_state(_training_state(model, param_schedulers=schedulers), model)
    with pytest.raises(ValueError, match=r"run/x.pth: meta\['config'\] holds Python source"):
        _check_training_state(
            _training_state(model, meta={"epoch": 0, "iter": 3, "config": ""}), model
        )
    three = {"1.bias": model.state_dict()["1.bias"]}
    with pytest.raises(ValueError, match=r"missing 0\.bias; missing 1\.weight$"):
        _check_training_state(_training_state(model, state_dict=three), model)
