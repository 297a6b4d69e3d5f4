# Evaluate METER xxs on the KITTI Eigen test split at 192x636 (Garg crop, 80 m cap; no training).
#   meter-timm test mm_configs/meter/meter-xxs_kitti-192x636_test.py \
#       --checkpoint ../shared/weights/meter/build_model_best_kitti_xxs \
#       --cfg-options test_dataloader.dataset.data_root=KITTI_RAW \
#           test_dataloader.dataset.depth_root=KITTI_GT test_dataloader.dataset.split_file=SPLIT
# --checkpoint takes the authors' raw state dict or an mmengine checkpoint of this wrapper.
_base_ = [
    "../_base_/models/meter_xxs.py",
    "../_base_/datasets/kitti_eigen-192x636.py",
    "../_base_/default_runtime.py",
]
# the authors' KITTI weights output decimetres; the .kitti tag converts to metres
model = dict(backbone=dict(name="meter_xxs.kitti", pretrained=False))
