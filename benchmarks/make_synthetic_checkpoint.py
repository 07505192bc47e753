"""Write a large random EMO checkpoint (several GB) without ever holding the model in memory.

For memory benchmarks of streaming code (`benchmarks/select_memory.py`): tensors are drawn one
at a time, in the released layout, and streamed into safetensors shards by `write_checkpoint`,
so peak memory is about one shard. A byte-level BPE tokenizer trained on a few hundred
documents of a JSONL file is written beside the weights.

    python benchmarks/make_synthetic_checkpoint.py /tmp/synth-emo           # ~3.5 GB bf16
    python benchmarks/make_synthetic_checkpoint.py /tmp/big --experts 128   # ~7 GB
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from emomoe.config import EmoConfig
from emomoe.io.checkpoint import expected_shapes, write_checkpoint


def synthetic_config(args: argparse.Namespace) -> EmoConfig:
    return EmoConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.expert_hidden,
                     num_hidden_layers=args.layers, num_attention_heads=args.heads,
                     num_key_value_heads=args.heads, max_position_embeddings=2048, num_experts=args.experts,
                     num_experts_per_tok=args.top_k, num_shared_experts=1, eos_token_id=0)


def random_tensors(config: EmoConfig, dtype: torch.dtype, seed: int):
    """(name, tensor) in the released layout, each drawn when asked for (norms are ones)."""
    gen = torch.Generator().manual_seed(seed)
    std = config.initializer_range
    for name, shape in expected_shapes(config).items():
        if name.endswith("norm.weight"):
            yield name, torch.ones(shape, dtype=dtype)
        else:
            yield name, (torch.randn(shape, generator=gen) * std).to(dtype)


def train_tokenizer(text_file: Path, vocab_size: int, docs: int):
    """A byte-level BPE tokenizer trained on the first `docs` texts of a JSONL file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = []
    with open(text_file) as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) >= docs:
                break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--expert-hidden", type=int, default=512)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--max-shard-size", default="1GB")
    p.add_argument("--text", type=Path, default=Path("../shared/corpus/val.jsonl"),
                   help="JSONL to train the tokenizer on")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    config = synthetic_config(args)
    tok = train_tokenizer(args.text, min(4096, args.vocab), 500)
    with tempfile.TemporaryDirectory() as tmp:
        tok_path = Path(tmp) / "tokenizer.json"
        tok.save(str(tok_path))
        write_checkpoint(args.out, config, random_tensors(config, getattr(torch, args.dtype), args.seed),
                         args.max_shard_size, extra_files={"tokenizer.json": tok_path})
    size = sum(f.stat().st_size for f in args.out.glob("*.safetensors"))
    print(f"wrote {args.out}: {size / 1e9:.2f} GB of safetensors")


if __name__ == "__main__":
    main()
