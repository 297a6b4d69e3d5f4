# exp1 of the seed: METER xxs on NYU (h5 layout), balanced loss, AdamW lr 1e-3 x0.1 every 20
# epochs, batch 32, 60 epochs, no selectivity loss. The hook still dissects layer encoder.6
# (32 uniform bins) after every validation, so its selectivity can be compared with exp15-18.
#   meter-timm train mm_configs/meter/meter-xxs_1xb32-60e_nyu-192x256.py
_base_ = [
    "../_base_/models/meter_xxs.py",
    "../_base_/datasets/nyu_h5-192x256.py",
    "../_base_/schedules/schedule_60e.py",
    "../_base_/default_runtime.py",
]
train_dataloader = dict(batch_size=32)
custom_hooks = [
    dict(type="SelectivityHook", layers=[dict(name="encoder.6", num_bins=32, strategy="uniform")]),
]
