# A different discretisation per layer (the seed's future work): uniform bins on the stride-8
# MobileViT block, log-spaced bins on the stride-16 one; lambda relative to the depth loss (10%),
# so it needs no re-tuning when the loss changes; linear lambda warm-up over the first epoch.
#   meter-timm train mm_configs/selectivity/meter-xxs_sel-multi_1xb32-60e_nyu-192x256.py
_base_ = ["../meter/meter-xxs_1xb32-60e_nyu-192x256.py"]
model = dict(
    selectivity=dict(
        type="SelectivityLoss",
        lam=0.1,
        relative=True,
        layers=[
            dict(name="encoder.6", num_bins=32, strategy="uniform"),
            dict(name="encoder.8", num_bins=32, strategy="log"),
        ],
    ),
)
custom_hooks = [dict(type="SelectivityHook", warmup_iters=1500)]
