"""Data: tokenize text, write memory-mapped token shards, pack them into training batches.

tok = train_tokenizer(files=["train.jsonl"], vocab_size=8192)      # or Tokenizer.from_file(...)
prepare(["train.jsonl"], tok, "data/train", val_frac=0.01)
shards = TokenShards("data/train")                                   # split "train"
loader = PackedLoader(shards, seq_len=1024, global_batch_size=64, micro_batch_size=8,
                      rank=rank, world_size=world_size, seed=0)
micro_batches = loader.next_step()   # list of {input_ids, labels, doc_ids, domain_ids}: [M, T]
"""

from .loader import PackedLoader, validation_batches
from .packing import IGNORE_INDEX
from .prepare import PrepareError, PrepareResult, prepare
from .readers import Doc, iter_documents
from .shards import TokenShards
from .tokenizer import DEFAULT_EOS, DEFAULT_PAD, Tokenizer, token_dtype, train_tokenizer

__all__ = [
    "DEFAULT_EOS",
    "DEFAULT_PAD",
    "IGNORE_INDEX",
    "Doc",
    "PackedLoader",
    "PrepareError",
    "PrepareResult",
    "TokenShards",
    "Tokenizer",
    "iter_documents",
    "prepare",
    "token_dtype",
    "train_tokenizer",
    "validation_batches",
]
