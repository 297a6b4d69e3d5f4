# METER's training augmentations (each with p = 0.5) and the evaluation resize, at 192x256 input:
# the one definition of both pipelines, inherited by every NYU training config.
input_size = (192, 256)

train_pipeline = [
    dict(type="RandomMirror", prob=0.5),
    dict(type="RandomChannelSwap", prob=0.5),
    dict(type="RandomDepthCrop", crop_ratio=0.9, prob=0.5),
    dict(type="ColorDepthShift", factor_range=(0.9, 1.1), shift_cm=(-10, 10), prob=0.5),
    dict(type="ResizeDepth", scale=input_size, resize_depth=True),
    dict(type="PackDepthInputs"),
]
test_pipeline = [
    dict(type="ResizeDepth", scale=input_size, resize_depth=False),
    dict(type="PackDepthInputs"),
]
