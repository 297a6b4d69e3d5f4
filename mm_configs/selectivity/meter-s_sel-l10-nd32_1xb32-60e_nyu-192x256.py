# METER s + selectivity loss (lambda 10, N_d 32) on encoder.6 (first MobileViT block: 96 units
# at stride 8 for s).
#   meter-timm train mm_configs/selectivity/meter-s_sel-l10-nd32_1xb32-60e_nyu-192x256.py
_base_ = ["./meter-xxs_sel-l10-nd32_1xb32-60e_nyu-192x256.py"]
model = dict(backbone=dict(name="meter_s"))
