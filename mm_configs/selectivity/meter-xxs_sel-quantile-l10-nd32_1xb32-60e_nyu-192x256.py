# A third-party strategy by name: "quantile" bins (equal pixel counts per bin) from the example
# plugin package plugins/meter_timm_quantile (pip install -e plugins/meter_timm_quantile).
#   meter-timm train mm_configs/selectivity/meter-xxs_sel-quantile-l10-nd32_1xb32-60e_nyu-192x256.py
_base_ = ["./meter-xxs_sel-l10-nd32_1xb32-60e_nyu-192x256.py"]
model = dict(selectivity=dict(layers=[dict(name="encoder.6", num_bins=32, strategy="quantile")]))
custom_hooks = [dict(type="SelectivityHook", refit_interval=500)]  # refits the quantile edges
