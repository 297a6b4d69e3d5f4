# Any timm backbone: ResNet-18 features (features_only=True) + the light FPN-like decoder, trained
# with METER's balanced loss and the selectivity loss on layer3 (256 units at stride 16),
# lambda 10, N_d 32. Same NYU data and 60-epoch recipe as the METER configs.
#   meter-timm train mm_configs/selectivity/resnet18-light-decoder_sel-l10-nd32_1xb32-60e_nyu-192x256.py  # noqa: E501
_base_ = [
    "../_base_/models/timm-features_light-decoder.py",
    "../_base_/datasets/nyu_h5-192x256.py",
    "../_base_/schedules/schedule_60e.py",
    "../_base_/default_runtime.py",
]
model = dict(
    backbone=dict(name="resnet18", pretrained=False, features_only=True),
    depth_loss=dict(type="BalancedLoss"),
    selectivity=dict(
        type="SelectivityLoss",
        lam=10.0,
        relative=False,
        layers=[dict(name="layer3", num_bins=32, strategy="uniform")],
    ),
)
train_dataloader = dict(batch_size=32)
custom_hooks = [dict(type="SelectivityHook")]
