# Learned assignment: units keep the depth bins they already prefer (balanced linear-sum
# assignment over the measured responses); lambda 10, 32 bins. The seed's future work ("better
# assignment strategies"). Trained from scratch, so nothing is calibrated before training (the
# random initial network prefers nothing): the edges are fitted to the training depths at
# iteration 1000, the matching to the units' responses at iteration 1500, then frozen.
#   meter-timm train mm_configs/selectivity/meter-xxs_sel-l10-nd32-learned_1xb32-60e_nyu-192x256.py
_base_ = ["./meter-xxs_sel-l10-nd32_1xb32-60e_nyu-192x256.py"]
model = dict(selectivity=dict(layers=[dict(name="encoder.6", num_bins=32, strategy="learned")]))
custom_hooks = [
    dict(type="SelectivityHook", refit_interval=500, refit_after=500, calibrate_frames=0)
]
