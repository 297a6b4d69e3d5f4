# exp18 of the seed: METER xxs + selectivity loss, lambda 100, N_d 24 uniform bins (Eq. 2).
# Layer encoder.6 = the seed's "layer 6" (first MobileViT block, 48 units at stride 8; see
# meter-facts.md); lambda is absolute, on the balanced loss in centimetres as in the seed.
#   meter-timm train mm_configs/selectivity/meter-xxs_sel-l100-nd24_1xb32-60e_nyu-192x256.py
_base_ = ["../meter/meter-xxs_1xb32-60e_nyu-192x256.py"]
model = dict(
    selectivity=dict(
        type="SelectivityLoss",
        lam=100.0,
        relative=False,
        layers=[dict(name="encoder.6", num_bins=24, strategy="uniform")],
    ),
)
custom_hooks = [dict(type="SelectivityHook")]  # dissects the trained layer with its own bins
