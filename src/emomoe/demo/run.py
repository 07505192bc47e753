"""`emomoe demo`: the EMO effect on this machine, offline, in minutes.

Builds a multi-domain corpus from text already installed (or takes --data), trains a small EMO and
the same model with a standard router for the same number of steps, measures how each domain's
loss rises when only that domain's experts are kept, and writes a report.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from emomoe.demo.compare import CompareConfig, results_markdown, run_comparison, write_results
from emomoe.demo.corpus import build_corpus

# 4 layers, d 128, 32 SwiGLU experts of 64 (1 shared), 4 per token: ~4M parameters.
DEMO_MODEL = {"preset": "small", "vocab_size": 2048, "hidden_size": 128, "intermediate_size": 64,
              "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4, "num_experts": 32,
              "num_experts_per_tok": 4, "pool_min": 4, "pool_max": 31, "pool_eval": 8}
SEQ_LEN, BATCH = 256, 16
CALIB_DOCS, EVAL_DOCS = 4, 24


def split_corpus(corpus: Path, train: Path, val: Path, held_out: int) -> dict[str, int]:
    """Hold out the first `held_out` documents of every domain (file order) as validation."""
    taken: dict[str, int] = defaultdict(int)
    with corpus.open(encoding="utf-8") as src, train.open("w", encoding="utf-8") as tr, \
            val.open("w", encoding="utf-8") as va:
        for line in src:
            if not line.strip():
                continue
            record = json.loads(line)
            domain = str(record.get("domain", "unknown"))
            if taken[domain] < held_out:
                taken[domain] += 1
                va.write(line if line.endswith("\n") else line + "\n")
            else:
                tr.write(line if line.endswith("\n") else line + "\n")
    return dict(taken)


def seconds_per_step(model_fields: dict, seq_len: int = SEQ_LEN, batch: int = BATCH, steps: int = 3) -> float:
    """Time of one EMO training step of the demo model on this machine (random tokens)."""
    from emomoe.train import config as train_config
    from emomoe.train.distributed import Dist
    from emomoe.train.optim import build_optimizer
    from emomoe.train.step import train_step

    cfg = train_config.from_dict({"model": dict(model_fields), "data": {"train": "-", "seq_len": seq_len},
                                  "train": {"global_batch_size": batch, "micro_batch_size": batch, "max_steps": 1}})
    torch.manual_seed(0)
    from emomoe.model import EmoForCausalLM

    model = EmoForCausalLM(cfg.model_config()).train()
    opt = build_optimizer(model, cfg.optim)
    ids = torch.randint(2, model.config.vocab_size, (batch, seq_len))
    batch_dict = {"input_ids": ids, "labels": ids.roll(-1, 1), "doc_ids": torch.arange(seq_len).expand(batch, -1)
                  // 64, "domain_ids": torch.zeros_like(ids)}
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        train_step(model, [batch_dict], 0, step, cfg, Dist(), opt, 1e-4)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def run_demo(out: str | Path = "emomoe-demo", data: str | Path | None = None, minutes: float = 8.0,
             steps: int | None = None, seed: int = 0, eval_docs: int = EVAL_DOCS,
             log: Callable[[str], None] = print) -> dict:
    """Run the demo; returns {"results", "report", "table"} (paths and the comparison)."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.jsonl"
    if data is None:
        log("building a corpus from real text on this machine:")
        build_corpus(corpus, seed=seed, log=log)
    else:
        if not Path(data).is_file():
            raise FileNotFoundError(f"--data {data} does not exist")
        corpus.write_bytes(Path(data).read_bytes())
        log(f"corpus: {data}")
    held = split_corpus(corpus, out / "train.jsonl", out / "val.jsonl", CALIB_DOCS + eval_docs)
    small = [d for d, n in held.items() if n < CALIB_DOCS + 1]
    if small:
        raise ValueError(f"domains with too few documents for calibration and evaluation: {small}")
    if steps is None:
        per_step = seconds_per_step(DEMO_MODEL)
        budget = max(minutes * 60 - 150, 60) / 2  # per model; the rest is data, evaluation and the report
        steps = int(min(max(budget / (per_step * 1.15), 50), 800))
        log(f"this machine: {per_step:.2f} s per training step -> {steps} steps per model "
            f"(about {steps * per_step * 1.15 / 60:.1f} min each; --steps to change)")
    cfg = CompareConfig(train_file=str(out / "train.jsonl"), val_file=str(out / "val.jsonl"), out=str(out),
                        vocab_size=DEMO_MODEL["vocab_size"], model=dict(DEMO_MODEL), seq_len=SEQ_LEN,
                        global_batch_size=BATCH, micro_batch_size=BATCH, max_steps=steps, warmup_steps=30,
                        seed=seed, calib_docs=CALIB_DOCS, eval_docs=eval_docs)
    results = run_comparison(cfg, log=log)
    report = None
    try:
        from emomoe.analysis.report import analyze

        log("report: expert usage per domain, specialisation metrics, document clusters")
        report = analyze(results["checkpoints"], out / "val.jsonl", out / "report", max_docs_per_domain=eval_docs,
                         max_length=SEQ_LEN)
    except ImportError as exc:  # matplotlib missing: the tables still stand
        log(f"report skipped ({exc}); pip install 'emomoe[plot]' for figures")
    results["wall_seconds"] = time.perf_counter() - start
    write_results(results, out)
    return {"results": out / "results.json", "report": report, "table": results_markdown(results),
            "wall_seconds": results["wall_seconds"]}
