"""Text generation: batched incremental decoding with a KV cache, sampling, stop rules, adaptive pools.

    out = generate(model, tokenizer, ["Once upon a time", "def main():"], max_new_tokens=64)
    out = generate(model, tokenizer, prompt, pool=8)        # route inside the prompt's own pool
    print(out.texts)

See docs/generate.md.
"""

from emomoe.generate.cache import KVCache
from emomoe.generate.loop import GenerationOutput, generate_ids, left_pad
from emomoe.generate.pool import PoolReport, load_pool_model, route_within, row_pools
from emomoe.generate.sampling import Sampling, filter_logits, next_tokens
from emomoe.generate.text import TextStream, cut_at_stop, generate

__all__ = [
    "generate", "generate_ids", "GenerationOutput", "KVCache", "Sampling", "filter_logits", "next_tokens",
    "TextStream", "cut_at_stop", "left_pad", "load_pool_model", "PoolReport", "route_within", "row_pools",
]
