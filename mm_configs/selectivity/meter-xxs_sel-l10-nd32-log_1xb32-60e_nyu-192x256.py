# exp15 with log-spaced bins (the ICCV 2021 discretisation: edges 0, 0.75 m, then
# spacing-increasing to 10 m), lambda 10, N_d 32.
#   meter-timm train mm_configs/selectivity/meter-xxs_sel-l10-nd32-log_1xb32-60e_nyu-192x256.py
_base_ = ["./meter-xxs_sel-l10-nd32_1xb32-60e_nyu-192x256.py"]
model = dict(selectivity=dict(layers=[dict(name="encoder.6", num_bins=32, strategy="log")]))
