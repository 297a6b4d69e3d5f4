# The Eigen test split (654 frames) for evaluation, in one of three layouts:
#   DenseDepth csv (default):  data_root="data/nyu2_test.csv" (16-bit millimetre depth pngs)
#   labeled .mat:              data_root="data/nyu_depth_v2_labeled.mat",
#                              split_file="data/splits.mat" (testNdxs, 1-based)
#   sparse-to-dense h5:        data_root="data/nyudepthv2", subdir="val"
# Standard protocol: RGB resized to 192x256 (bilinear, antialiased), prediction upsampled to
# 480x640, clamped to [1e-3, 10] m, Eigen crop, per-image metrics averaged over images.
dataset_type = "NYUDepthDataset"
input_size = (192, 256)

test_pipeline = [
    dict(type="ResizeDepth", scale=input_size, resize_depth=False),
    dict(type="PackDepthInputs"),
]
test_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type, data_root="data/nyu2_test.csv", test_mode=True, pipeline=test_pipeline
    ),
)
test_evaluator = dict(
    type="DepthMetric", min_depth_eval=1e-3, max_depth_eval=10.0, crop_type="nyu_crop"
)
test_cfg = dict(type="TestLoop")
