"""Selective expert use: choose K experts per layer from calibration text, then delete the rest.

    sel = select_experts("runs/emo-small/final", texts, keep=8, method="global")
    prune("runs/emo-small/final", sel, "pruned/")          # streamed checkpoint -> checkpoint
    small = prune_model(model, sel)                         # or in memory

See docs/select.md.
"""

from emomoe.select.calib import CalibrationSet, from_texts, from_token_ids, load_calibration, load_tokenizer
from emomoe.select.prune import PruneReport, prune, prune_model, pruned_config, tokenizer_files
from emomoe.select.scores import METHODS
from emomoe.select.selection import Selection, resolve_keep, select_experts

__all__ = [
    "select_experts", "prune", "prune_model", "Selection", "PruneReport", "METHODS", "CalibrationSet",
    "load_calibration", "load_tokenizer", "from_texts", "from_token_ids", "pruned_config", "resolve_keep",
    "tokenizer_files",
]
