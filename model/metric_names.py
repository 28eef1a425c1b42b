"""Names of the metrics an epoch reports; a light module (no torch) for the study driver."""

# Loss names a criterion reports (the CenterNet head has no loss_cls).
LOSS_KEYS = ("loss", "loss_cls", "loss_pos", "loss_size", "loss_offset")
# Evaluation metrics, 0-100: COCO AP, and recall of objects sharing their heatmap cell with a
# same-class object (the paper's Fig. 2 case; NaN when the val split has none).
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "overlap_recall")
