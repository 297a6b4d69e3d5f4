# exp16 of the seed: exp15 (METER xxs + selectivity loss on encoder.6, N_d 32 uniform bins)
# with lambda 100.
#   meter-timm train mm_configs/selectivity/meter-xxs_sel-l100-nd32_1xb32-60e_nyu-192x256.py
_base_ = ["./meter-xxs_sel-l10-nd32_1xb32-60e_nyu-192x256.py"]
model = dict(selectivity=dict(lam=100.0))
