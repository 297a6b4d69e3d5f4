# NYU Depth V2 in the sparse-to-dense h5 layout (data/nyudepthv2/{train,val}); 192x256 input.
# Training applies METER's augmentations (each p=0.5); evaluation keeps the 480x640 ground truth
# and DepthMetric applies the Eigen crop.
_base_ = ["./meter_augmentation-192x256.py"]
dataset_type = "NYUDepthDataset"
data_root = "data/nyudepthv2"

train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    # False: each epoch's workers start from seeded random streams, so --resume is exact
    persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, subdir="train", pipeline={{_base_.train_pipeline}}
    ),
)
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        subdir="val",
        test_mode=True,
        pipeline={{_base_.test_pipeline}},
    ),
)
test_dataloader = val_dataloader

val_evaluator = dict(
    type="DepthMetric", min_depth_eval=1e-3, max_depth_eval=10.0, crop_type="nyu_crop"
)
test_evaluator = val_evaluator
