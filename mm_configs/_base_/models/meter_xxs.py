# METER xxs (713,464 parameters) trained with METER's balanced loss; output in metres at 1/4 size.
model = dict(
    type="DepthEstimator",
    backbone=dict(name="meter_xxs", pretrained=False),
    depth_loss=dict(type="BalancedLoss"),
    data_preprocessor=dict(type="DepthDataPreprocessor"),  # ImageNet mean/std on 0-255 input
)
