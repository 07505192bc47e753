"""EMO against the architecture-matched standard MoE, end to end, on one corpus.

tokenizer -> prepare -> train both models (same data order, seed, steps, budget; only the router
differs) -> per-domain modularity curves (select experts from a few calibration documents of a
domain, evaluate that domain's held-out documents with the subset). Used by `emomoe demo` and by
`benchmarks/modularity.py`.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from emomoe.data import Tokenizer, prepare, train_tokenizer
from emomoe.eval.data import by_domain, read_documents
from emomoe.eval.modularity import domain_table, markdown_table, modularity_curve, plot_curves
from emomoe.io.checkpoint import load_model
from emomoe.train import config as train_config
from emomoe.train.loop import train

ROUTERS = {"emo": "emo", "standard": "standard"}


@dataclass
class CompareConfig:
    """Everything the comparison depends on; written into results.json.

    With `config_files` ({"emo": path, "standard": path}, e.g. configs/emo-small.toml and
    configs/stdmoe-small.toml) each arm trains from its file with only the data path, output
    directory (and `max_steps` when given) overridden; otherwise both arms are built from the
    fields below and differ only in the router.
    """

    train_file: str
    val_file: str
    out: str
    vocab_size: int = 8192
    config_files: dict[str, str] | None = None
    model: dict = field(default_factory=lambda: {"preset": "small"})  # EmoConfig preset + overrides
    model_overrides: dict = field(default_factory=dict)  # applied to both arms (ablations)
    seq_len: int = 256
    global_batch_size: int = 16
    micro_batch_size: int = 16
    max_steps: int | None = None  # None: the config files' (700 for the small examples)
    lr: float = 3e-3
    warmup_steps: int = 50
    lb_weight: float | None = None  # None: the config files' (0.05)
    lb_scope: str | None = None
    seed: int = 0
    keep_fracs: Sequence[float] = (1.0, 0.5, 0.25, 0.125)
    method: str = "global"
    calib_docs: int = 4
    eval_docs: int = 40  # held-out documents evaluated per domain
    workers: int = 2
    progress: bool = True
    parallel_arms: bool = False  # train both arms at once, in two processes with half the threads each


def train_config_for(cfg: CompareConfig, router: str, data_dir: Path, out_dir: Path) -> train_config.TrainConfig:
    """The training config of one arm: identical for both, except the router."""
    if cfg.config_files:
        raw = train_config.load_train_config(cfg.config_files[router], [f"data.train={data_dir}"]).to_dict()
    else:
        raw = {"model": {**copy.deepcopy(cfg.model), "router": router},
               "data": {"seq_len": cfg.seq_len},
               "optim": {"lr": cfg.lr, "warmup_steps": cfg.warmup_steps},
               "train": {"global_batch_size": cfg.global_batch_size, "micro_batch_size": cfg.micro_batch_size,
                         "max_steps": cfg.max_steps or 100, "seed": cfg.seed, "log_interval": 10}}
    raw["data"]["train"] = str(data_dir)
    raw["model"].update(cfg.model_overrides)
    run = raw["train"]
    run.update(out_dir=str(out_dir), progress=cfg.progress, checkpoint_interval=0, eval_interval=0)
    if cfg.max_steps is not None:
        run.update(max_steps=cfg.max_steps, max_tokens=None)
    if cfg.lb_weight is not None:
        run["lb_weight"] = cfg.lb_weight
    if cfg.lb_scope is not None:
        run["lb_scope"] = cfg.lb_scope
    tc = train_config.from_dict(raw)
    if tc.model_config().router != router:
        raise ValueError(f"the {router} arm's config trains router {tc.model_config().router!r}")
    return tc


def _train_arm(tc: train_config.TrainConfig, threads: int | None) -> str:
    """Train one arm (in a worker process when run side by side); returns the final checkpoint path."""
    if threads is not None:
        torch.set_num_threads(threads)
        tc.train.progress = False
    return train(tc)["final"]


def run_comparison(cfg: CompareConfig, log: Callable[[str], None] = print) -> dict:
    """Run every stage; returns (and writes to OUT/results.json) the per-model modularity curves."""
    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    log(f"[1/4] tokenizer: byte-level BPE, vocab {cfg.vocab_size}, on {cfg.train_file}")
    tok_file = train_tokenizer(files=[cfg.train_file], vocab_size=cfg.vocab_size).save(out / "tokenizer")
    tokenizer = Tokenizer.from_file(tok_file)
    log(f"[2/4] prepare: {cfg.train_file} -> {out / 'data'}")
    prepare([cfg.train_file], tok_file, out / "data", workers=cfg.workers, progress=cfg.progress, force=True)
    timings["data_seconds"] = time.perf_counter() - t

    configs = {name: train_config_for(cfg, router, out / "data", out / name) for name, router in ROUTERS.items()}
    steps = next(iter(configs.values())).max_steps
    seq_len = next(iter(configs.values())).data.seq_len  # evaluate at the length the models were trained on
    t = time.perf_counter()
    if cfg.parallel_arms:
        threads = max(1, (os.cpu_count() or 2) // 2)
        log(f"[3/4] train emo and standard side by side ({threads} thread(s) each): {steps} steps each")
        with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {name: pool.submit(_train_arm, tc, threads) for name, tc in configs.items()}
            finals = {name: Path(f.result()) for name, f in futures.items()}
    else:
        finals = {}
        for i, (name, tc) in enumerate(configs.items()):
            log(f"[3/4] train {name} ({i + 1}/2): {steps} steps of {tc.global_batch_size} x {tc.data.seq_len} tokens")
            finals[name] = Path(_train_arm(tc, None))
    timings["train_seconds"] = time.perf_counter() - t

    docs = by_domain(read_documents(cfg.val_file))
    curves = {}
    for name, path in finals.items():
        t = time.perf_counter()
        log(f"[4/4] modularity of {name}: {len(docs)} domains, keep {list(cfg.keep_fracs)}, "
            f"{cfg.calib_docs} calibration + up to {cfg.eval_docs} evaluation documents per domain")
        model = load_model(path)
        curves[name] = modularity_curve(model, docs, tokenizer, cfg.keep_fracs, cfg.method, cfg.calib_docs,
                                        max_docs_per_domain=cfg.eval_docs, max_length=seq_len,
                                        progress=cfg.progress)
        timings[f"modularity_{name}_seconds"] = time.perf_counter() - t

    results = {"models": curves, "config": asdict(cfg) | {"keep_fracs": list(cfg.keep_fracs)},
               "timings": timings, "wall_seconds": time.perf_counter() - start,
               "checkpoints": {name: str(path) for name, path in finals.items()},
               "target": target_check(curves)}
    write_results(results, out)
    return results


def target_check(curves: dict) -> dict:
    """The paper's claims at small scale: EMO's full loss within 3% of the standard MoE's, and at
    1/8 of the experts EMO's mean loss increase at most one third of the standard MoE's."""
    emo, std = curves.get("emo"), curves.get("standard")
    if not emo or not std:
        return {}
    full_gap = emo["full"]["avg_loss"] / std["full"]["avg_loss"] - 1
    out = {"full_loss_gap": full_gap, "full_loss_within_3pct": full_gap <= 0.03}
    key = "0.125"
    if key in emo["keep"] and key in std["keep"]:
        e, s = emo["keep"][key]["avg_rel_increase"], std["keep"][key]["avg_rel_increase"]
        out.update(emo_increase_at_eighth=e, standard_increase_at_eighth=s,
                   eighth_at_most_one_third=e <= s / 3)
    return out


def write_results(results: dict, out: Path) -> None:
    """results.json, results.md (tables) and modularity.png (when matplotlib is installed)."""
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out / "results.json")
    (out / "results.md").write_text(results_markdown(results))
    try:
        plot_curves(results["models"], out / "modularity.png")
    except (ImportError, ValueError):
        pass  # matplotlib missing: tables only


def results_markdown(results: dict) -> str:
    lines = ["## Mean over domains", "", markdown_table(results["models"])]
    for name, curve in results["models"].items():
        lines += [f"## {name}: loss increase per domain", "", domain_table(curve)]
    target = results.get("target") or {}
    if target:
        lines += ["## Target (EMO.md section 1)", "",
                  f"- full-model loss: EMO / standard - 1 = {100 * target['full_loss_gap']:+.2f}% "
                  f"(target <= +3%: {'met' if target['full_loss_within_3pct'] else 'missed'})"]
        if "emo_increase_at_eighth" in target:
            lines.append(f"- at 1/8 of the experts: EMO {100 * target['emo_increase_at_eighth']:+.1f}% vs standard "
                         f"{100 * target['standard_increase_at_eighth']:+.1f}% (target: at most one third: "
                         f"{'met' if target['eighth_at_most_one_third'] else 'missed'})")
        lines.append("")
    return "\n".join(lines)
