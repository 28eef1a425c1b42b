"""Params and MACs counted once per architecture per study, not once per trial.

Counting a model's MACs (``FlopCounterMode`` on the meta device) takes over a second for the
paper's model and depends only on the model configuration, so the first trial of each architecture
counts it and leaves ``<study>/costs/<hash of the model config>.json``; later trials read it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

from transcenter.store.uri import read_text, write_text


def cost_key(model_config) -> str:
    """Returns the cache key of a model configuration: a hash of all its fields."""
    fields = json.dumps(dataclasses.asdict(model_config), sort_keys=True, default=str)
    return hashlib.sha256(fields.encode()).hexdigest()[:20]


def cached_count(directory: str) -> Callable[..., dict]:
    """Returns ``count(model_config) -> {"params", "macs", ...}`` that reads the count from
    ``directory`` (local path or URI) when a trial already left it there, else counts and leaves
    it. A file being written by another trial at the same moment is counted again, not trusted."""
    def count_once(model_config) -> dict:
        path = f"{directory.rstrip('/')}/{cost_key(model_config)}.json"
        text = read_text(path)
        if text:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                pass
        from transcenter.model.evaluation.complexity import count

        result = count(model_config)
        write_text(path, json.dumps(result))
        return result

    return count_once
