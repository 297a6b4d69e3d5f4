# METER s (3,295,168 parameters) trained with METER's balanced loss; output in metres at 1/4 size.
model = dict(
    type="DepthEstimator",
    backbone=dict(name="meter_s", pretrained=False),
    depth_loss=dict(type="BalancedLoss"),
    data_preprocessor=dict(type="DepthDataPreprocessor"),  # ImageNet mean/std on 0-255 input
)
