"""The result store: the contract between the study platform, which writes it, and the dashboards
and users, which read it (``results.py``: parquet per trial-epoch and per trial, plus the study's
metadata; ``metric_names.py``: the metrics an epoch reports; ``uri.py``: where a study lives,
how its files are opened and how its URLs are shown). It imports neither Ray nor
the model's torch code, so a copied study folder reads anywhere with pandas and pyarrow.
"""
