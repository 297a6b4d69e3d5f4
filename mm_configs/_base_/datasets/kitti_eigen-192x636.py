# KITTI, Eigen test split (the frames with ground truth), for evaluation at METER's 192x636.
#   data_root:  the raw KITTI folders (2011_09_26/2011_09_26_drive_0002_sync/image_02/data/...)
#   depth_root: the ground-truth PNGs (<drive>/proj_depth/groundtruth/image_02/..., also under
#               train/ and val/ as the depth benchmark ships them)
#   split_file: "image depth focal" lines (BTS style) or "folder frame l|r" lines (Monodepth2)
# Protocol: RGB resized to 192x636 (bilinear, antialiased), prediction upsampled to the ground
# truth, clamped to [1e-3, 80] m, Garg crop, ground truth counted in (1e-3, 80) m.
dataset_type = "KITTIDepthDataset"
input_size = (192, 636)

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
        type=dataset_type,
        data_root="data/kitti_raw",
        depth_root="data/kitti_depth",
        split_file="data/eigen_test_files_with_gt.txt",
        max_depth=80.0,
        test_mode=True,
        pipeline=test_pipeline,
    ),
)
test_evaluator = dict(
    type="DepthMetric", min_depth_eval=1e-3, max_depth_eval=80.0, crop_type="garg_crop"
)
test_cfg = dict(type="TestLoop")
