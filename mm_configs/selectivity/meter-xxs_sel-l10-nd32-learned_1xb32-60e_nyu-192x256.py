# Learned assignment: units keep the depth bins they already prefer (balanced linear-sum
# assignment over the measured responses), refitted every 500 iterations after a 1000-iteration
# warm-up; lambda 10, N_d 32 uniform bins. The seed's future work ("better assignment strategies").
#   meter-timm train mm_configs/selectivity/meter-xxs_sel-l10-nd32-learned_1xb32-60e_nyu-192x256.py
_base_ = ["./meter-xxs_sel-l10-nd32_1xb32-60e_nyu-192x256.py"]
model = dict(selectivity=dict(layers=[dict(name="encoder.6", num_bins=32, strategy="learned")]))
custom_hooks = [dict(type="SelectivityHook", refit_interval=500, refit_after=1000)]
