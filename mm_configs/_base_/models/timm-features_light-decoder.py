# Any timm backbone with features_only=True plus the light FPN-like decoder (output at stride 4).
model = dict(
    type="DepthEstimator",
    backbone=dict(name="mobilevit_xxs", pretrained=False, features_only=True),
    decoder=dict(channels=64, init_depth=3.0),
    depth_loss=dict(type="SiLogLoss"),
    data_preprocessor=dict(type="DepthDataPreprocessor"),
)
