"""The paper's reported numbers, as printed (PASCAL VOC 07+12, 512x512, one A100).

AP values are in percent (0-100), as in the paper and as `transcenter.model.evaluation.evaluate` reports them
and the result store holds them, so they are compared as written. Keys are heatmap sizes S (an S x S
heatmap).
"""

# Table 4 — upper limit: AP0.5:0.95, AP0.5, AP0.75 per heatmap size.
UPPER_LIMIT = {
    16: {"AP": 50.5, "AP50": 73.5, "AP75": 56.3},
    32: {"AP": 52.4, "AP50": 75.1, "AP75": 57.7},
    64: {"AP": 53.7, "AP50": 77.6, "AP75": 58.7},
    128: {"AP": 52.8, "AP50": 75.8, "AP75": 59.1},
}

# Table 2 — AP by object size, reported for the 64 x 64 model only.
AP_BY_OBJECT_SIZE = {64: {"APs": 17.4, "APm": 32.3, "APl": 64.9}}

# Figure 6 — lower limit: mAP0.5 in the first epochs.
LOWER_LIMIT_AP50 = {16: 44.9, 32: 42.3, 64: 40.5, 128: 38.2}

# Table 1 — multiply-accumulates (the paper's "Flops") in G and parameters in M.
COMPLEXITY = {
    16: {"macs_g": 25.07, "params_m": 45.79},
    32: {"macs_g": 28.81, "params_m": 46.84},
    64: {"macs_g": 43.74, "params_m": 47.89},
    128: {"macs_g": 103.46, "params_m": 48.94},
}
