# Fine-tune the authors' METER xxs NYU weights on real NYU frames with depth selectivity on
# encoder.6 (the seed's "layer 6"): 1,048 frames of 4 training scenes (nyu2_train.csv), validation
# with metrics and the dissection on a 5th scene left out of the fine-tuning (nyu2_val.csv, 126
# frames; the authors' weights were trained on it, with all of NYU's training scenes).
# Paths are relative to the repository root; ../shared holds the data and the weights.
# The real-data study (benchmarks/run_experiments.py --real) varies strategy, lambda and seed:
#   meter-timm train mm_configs/real_nyu/meter-xxs_sel-learned-encoder6_1xb8-2e_nyu-subset-192x256.py  # noqa: E501
_base_ = [
    "../_base_/models/meter_xxs.py",
    "../_base_/datasets/meter_augmentation-192x256.py",
    "../_base_/default_runtime.py",
]

data_root = "../shared/data/nyu_train_subset"
pretrained_weights = "../shared/weights/meter/build_model_best_nyu_xxs"

model = dict(
    backbone=dict(
        name="meter_xxs.nyu", pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_weights)
    ),
    # relative lambda: the selectivity term is lam x the (detached) depth loss, whatever its scale
    selectivity=dict(
        type="SelectivityLoss",
        lam=1.0,
        relative=True,
        layers=[dict(name="encoder.6", num_bins=32, strategy="learned")],
    ),
)
# the learned strategy is matched on 256 training frames with the pretrained weights, then frozen
custom_hooks = [dict(type="SelectivityHook", calibrate_frames=256)]

train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(
        type="NYUDepthDataset",
        data_root=f"{data_root}/nyu2_train.csv",
        pipeline={{_base_.train_pipeline}},
    ),
)
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type="NYUDepthDataset",
        data_root=f"{data_root}/nyu2_val.csv",
        test_mode=True,
        pipeline={{_base_.test_pipeline}},
    ),
)
# half-resolution frames (320x240): the Eigen crop of 640x480 does not apply
val_evaluator = dict(type="DepthMetric", min_depth_eval=1e-3, max_depth_eval=10.0, crop_type=None)

# gentle on the pretrained network, a 10x learning rate on the selective layer
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={"backbone.encoder.6": dict(lr_mult=10.0)}),
)
max_epochs = 2
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=True, begin=0, end=max_epochs)]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type="ValLoop")

default_hooks = dict(
    logger=dict(type="LoggerHook", interval=20),
    checkpoint=dict(type="CheckpointHook", interval=max_epochs, max_keep_ckpts=1, save_best=None),
)
log_processor = dict(by_epoch=True, window_size=20)
work_dir = "work_dirs/real_nyu_sel-learned"
