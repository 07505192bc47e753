"""emomoe: Mixture-of-Experts language models with emergent modularity (EMO)."""

from emomoe.analysis import analyze
from emomoe.config import PRESETS, EmoConfig, count_parameters, preset
from emomoe.eval import evaluate_documents, modularity_curve
from emomoe.generate import generate
from emomoe.io.checkpoint import CheckpointError, load_model, save_model
from emomoe.model import EmoForCausalLM, EmoOutput
from emomoe.select import Selection, prune, prune_model, select_experts

__version__ = "0.1.0"

__all__ = [
    "EmoConfig", "PRESETS", "preset", "count_parameters", "EmoForCausalLM", "EmoOutput",
    "load_model", "save_model", "CheckpointError", "Selection", "select_experts", "prune", "prune_model",
    "evaluate_documents", "modularity_curve", "analyze", "generate",
    "__version__",
]
