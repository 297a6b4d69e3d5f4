# NYU Depth V2 in the sparse-to-dense h5 layout (data/nyudepthv2/{train,val}); 192x256 input.
# Training applies METER's augmentations (each p=0.5); evaluation keeps the 480x640 ground truth
# and DepthMetric applies the Eigen crop.
dataset_type = "NYUDepthDataset"
data_root = "data/nyudepthv2"
input_size = (192, 256)

train_pipeline = [
    dict(type="RandomMirror", prob=0.5),
    dict(type="RandomChannelSwap", prob=0.5),
    dict(type="RandomDepthCrop", crop_ratio=0.9, prob=0.5),
    dict(type="ColorDepthShift", factor_range=(0.9, 1.1), shift_cm=(-10, 10), prob=0.5),
    dict(type="ResizeDepth", scale=input_size, resize_depth=True),
    dict(type="PackDepthInputs"),
]
test_pipeline = [
    dict(type="ResizeDepth", scale=input_size, resize_depth=False),
    dict(type="PackDepthInputs"),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, subdir="train", pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, subdir="val", test_mode=True, pipeline=test_pipeline
    ),
)
test_dataloader = val_dataloader

val_evaluator = dict(
    type="DepthMetric", min_depth_eval=1e-3, max_depth_eval=10.0, crop_type="nyu_crop"
)
test_evaluator = val_evaluator
