# METER xs (1,449,760 parameters) trained with METER's balanced loss; output in metres at 1/4 size.
model = dict(
    type="DepthEstimator",
    backbone=dict(name="meter_xs", pretrained=False),
    depth_loss=dict(type="BalancedLoss"),
    data_preprocessor=dict(type="DepthDataPreprocessor"),  # ImageNet mean/std on 0-255 input
)
