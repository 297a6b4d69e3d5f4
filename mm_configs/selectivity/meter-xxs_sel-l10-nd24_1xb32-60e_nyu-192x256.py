# exp17 of the seed: exp15 (METER xxs + selectivity loss on encoder.6, lambda 10) with N_d 24
# uniform bins (Eq. 2).
#   meter-timm train mm_configs/selectivity/meter-xxs_sel-l10-nd24_1xb32-60e_nyu-192x256.py
_base_ = ["./meter-xxs_sel-l10-nd32_1xb32-60e_nyu-192x256.py"]
model = dict(selectivity=dict(layers=[dict(name="encoder.6", num_bins=24, strategy="uniform")]))
