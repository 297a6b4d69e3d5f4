# The quickstart without the selectivity loss: the reference for its accuracy and for the depth
# selectivity of encoder.6 (dissected with the same 16 uniform bins).
#   meter-timm train mm_configs/quickstart_no-selectivity.py
_base_ = ["./quickstart.py"]
model = dict(selectivity=None)
custom_hooks = [
    dict(type="SelectivityHook", layers=[dict(name="encoder.6", num_bins=16, strategy="uniform")]),
]
work_dir = "work_dirs/quickstart_no-selectivity"
