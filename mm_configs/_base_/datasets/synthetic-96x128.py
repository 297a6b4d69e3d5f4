# The built-in procedural indoor data set (meter_timm.data.synthetic) at 96x128, NYU h5 layout.
# SyntheticDepthDataset writes it to data_root the first time it is built (by any runner) if it
# is missing; shrink it with e.g. --cfg-options train_dataloader.dataset.num_train=8.
dataset_type = "SyntheticDepthDataset"
data_root = "data/synthetic"
input_size = (96, 128)
synthetic = dict(num_train=1024, num_val=96, height=96, width=128, seed=0, frames_per_scene=16)

train_pipeline = [
    dict(type="RandomMirror", prob=0.5),
    dict(type="ResizeDepth", scale=input_size, resize_depth=True),
    dict(type="PackDepthInputs"),
]
test_pipeline = [
    dict(type="ResizeDepth", scale=input_size, resize_depth=False),
    dict(type="PackDepthInputs"),
]

train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, subdir="train", pipeline=train_pipeline, **synthetic
    ),
)
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        subdir="val/official",
        test_mode=True,
        pipeline=test_pipeline,
        **synthetic,
    ),
)
test_dataloader = val_dataloader

# synthetic frames have no border to crop
val_evaluator = dict(type="DepthMetric", min_depth_eval=1e-3, max_depth_eval=10.0, crop_type=None)
test_evaluator = val_evaluator
