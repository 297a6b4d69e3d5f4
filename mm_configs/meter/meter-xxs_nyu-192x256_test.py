# Evaluate METER xxs on the NYU Eigen test split at 192x256 (no training).
#   meter-timm test mm_configs/meter/meter-xxs_nyu-192x256_test.py \
#       --checkpoint ../shared/weights/meter/build_model_best_nyu_xxs \
#       --data ../shared/data/nyu_eigen_test_sample
# --checkpoint takes the authors' raw state dict or an mmengine checkpoint of this wrapper.
_base_ = [
    "../_base_/models/meter_xxs.py",
    "../_base_/datasets/nyu_eigen-192x256.py",
    "../_base_/default_runtime.py",
]
# the authors' NYU weights output centimetres; the .nyu tag converts to metres
model = dict(backbone=dict(name="meter_xxs.nyu", pretrained=False))
