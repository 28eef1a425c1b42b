"""Names of the metrics an epoch reports: the columns of the result store's epoch tables, and the
one list that the trainer, the study platform, telemetry and the dashboards import. A light module
(no torch, no pyarrow) for the study driver."""

# Loss names a criterion reports (the CenterNet head has no loss_cls).
LOSS_KEYS = ("loss", "loss_cls", "loss_pos", "loss_size", "loss_offset")
# COCO AP, 0-100.
COCO_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# Recall (0-100) of objects sharing their heatmap cell with a same-class object (the paper's
# Fig. 2 case; NaN when the val split has none).
OVERLAP_RECALL = "overlap_recall"
AP_KEYS = COCO_AP_KEYS + (OVERLAP_RECALL,)
# Training bookkeeping: learning rate, training images per second over all workers, seconds of
# training.
EXTRA_KEYS = ("lr", "images_per_s", "train_time_s")
# The cost of a trial's model, reported every epoch (objectives of accuracy-vs-compute studies):
# parameters, forward GMACs of one image at the input size (from the configuration), and, measured
# on the trial's own device at evaluation, inference images/s (val batches) and the latency of one
# image in ms (NaN when not evaluated that epoch).
CONFIG_COST_KEYS = ("params", "gmacs")
MEASURED_COST_KEYS = ("infer_images_per_s", "latency_ms")
COST_KEYS = CONFIG_COST_KEYS + MEASURED_COST_KEYS
# AP50 (0-100) of class k, as ``AP50_class<k>``; the class names are stored with the study.
PER_CLASS_AP50_PREFIX = "AP50_class"


def per_class_ap50_key(label: int) -> str:
    """Returns the metric name of class ``label``'s AP50: ``AP50_class<label>``."""
    return f"{PER_CLASS_AP50_PREFIX}{label}"
