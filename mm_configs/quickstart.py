# The README's main command: METER xxs with depth selectivity on layer encoder.6 (the seed's
# "layer 6"), trained on the built-in procedural indoor data (written to data/synthetic on first
# use) in a few minutes on 2 CPU cores.
#   meter-timm train mm_configs/quickstart.py
_base_ = [
    "_base_/models/meter_xxs.py",
    "_base_/datasets/synthetic-96x128.py",
    "_base_/schedules/quickstart.py",
    "_base_/default_runtime.py",
]
model = dict(
    selectivity=dict(
        type="SelectivityLoss",
        lam=0.1,
        relative=True,
        layers=[dict(name="encoder.6", num_bins=16, strategy="uniform")],
    ),
)
custom_hooks = [dict(type="SelectivityHook", warmup_iters=50)]
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=10),
    checkpoint=dict(type="CheckpointHook", interval=4, max_keep_ckpts=1, save_best=None),
)
log_processor = dict(by_epoch=True, window_size=10)
work_dir = "work_dirs/quickstart"
