# Log-spaced bins (the ICCV 2021 discretisation: edges 0, 0.75 m, then spacing-increasing to
# 10 m), lambda 10, N_d 32.
# Layer encoder.6 = the seed's "layer 6" (first MobileViT block, 48 units at stride 8; see
# meter-facts.md); lambda is absolute, on the balanced loss in centimetres as in the seed.
#   meter-timm train mm_configs/selectivity/meter-xxs_sel-l10-nd32-log_1xb32-60e_nyu-192x256.py
_base_ = ["../meter/meter-xxs_1xb32-60e_nyu-192x256.py"]
model = dict(
    selectivity=dict(
        type="SelectivityLoss",
        lam=10.0,
        relative=False,
        layers=[dict(name="encoder.6", num_bins=32, strategy="log")],
    ),
)
custom_hooks = [dict(type="SelectivityHook")]  # dissects the trained layer with its own bins
