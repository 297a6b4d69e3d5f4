# METER's recipe: AdamW (0.9, 0.999), weight decay 0.01, lr 1e-3 x0.1 every 20 epochs, 60 epochs.
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
)
param_scheduler = [dict(type="MultiStepLR", by_epoch=True, milestones=[20, 40], gamma=0.1)]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=60, val_interval=5)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
