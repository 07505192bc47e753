"""The training loop: read top to bottom. Model, parallelism, data and checkpoints live elsewhere."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

from emomoe.data.loader import PackedLoader, validation_batches
from emomoe.data.shards import TokenShards
from emomoe.io.checkpoint import load_model, read_config, save_model
from emomoe.model import EmoForCausalLM
from emomoe.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from emomoe.train.config import TrainConfig
from emomoe.train.distributed import Dist, all_reduce_sum, init_distributed, shutdown, unwrap, wrap_model
from emomoe.train.metrics import MetricsLog, flops_per_token, measure_matmul_peak, routing_stats
from emomoe.train.optim import build_optimizer, lr_at
from emomoe.train.step import autocast_context, train_step


def _fault_hook(event: str, step: int, rank: int = 0) -> None:
    """Test hooks: EMOMOE_FAULT=<event>:<step> SIGKILLs this process at that point (no cleanup);
    EMOMOE_FAULT=raise:<step>:<rank> raises an error in that rank after that step."""
    fault = os.environ.get("EMOMOE_FAULT")
    if fault == f"{event}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
    if event == "step" and fault == f"raise:{step}:{rank}":
        raise RuntimeError(f"injected fault in rank {rank} after step {step} (EMOMOE_FAULT)")


def build_model(cfg: TrainConfig, shards: TokenShards) -> EmoForCausalLM:
    """The model to train: fresh from the config (seeded), or the weights of `init_from`."""
    base = read_config(cfg.train.init_from) if cfg.train.init_from else None
    mcfg = cfg.model_config(base)
    if shards.vocab_size > mcfg.vocab_size:
        raise ValueError(f"the data's tokenizer has {shards.vocab_size} tokens but the model's vocab_size is "
                         f"{mcfg.vocab_size}; set model.vocab_size >= {shards.vocab_size}")
    if base is None and mcfg.eos_token_id is None:
        mcfg = mcfg.replace(eos_token_id=shards.eos_id, pad_token_id=shards.pad_id)
    torch.manual_seed(cfg.train.seed)
    model = EmoForCausalLM(mcfg)
    if cfg.train.init_from:
        model.load_state_dict(load_model(cfg.train.init_from, dtype=torch.float32).state_dict())
    for layer in model.model.layers:
        if cfg.train.freeze_router:
            layer.mlp.gate.weight.requires_grad_(False)
        if cfg.train.freeze_attention:
            for p in layer.self_attn.parameters():
                p.requires_grad_(False)
    return model


@torch.no_grad()
def evaluate(model, shards: TokenShards | None, cfg: TrainConfig, d: Dist) -> dict | None:
    """Validation loss overall and per domain (eval mode: pool_eval or no pool)."""
    if shards is None:
        return None
    core = unwrap(model)
    core.eval()
    names = shards.domain_names
    sums = torch.zeros(len(names) + 1, 2, dtype=torch.float64, device=d.device)  # [domain.., all] x (loss, n)
    batches = validation_batches(shards, cfg.data.seq_len, cfg.train.micro_batch_size, d.rank, d.world_size)
    for i, batch in enumerate(batches):
        if cfg.train.eval_batches and i >= cfg.train.eval_batches:
            break
        ids, labels, domains = (batch[k].to(d.device) for k in ("input_ids", "labels", "domain_ids"))
        doc_ids = batch["doc_ids"].to(d.device) if cfg.train.intra_doc_attention else None
        with autocast_context(cfg, d.device):
            logits = core(ids, doc_ids=doc_ids).logits.float()
        losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                                   reduction="none")
        valid = labels.flatten() != -100
        dom = domains.flatten().clamp(min=0)
        sums[:-1, 0].index_add_(0, dom[valid], losses[valid].double())
        sums[:-1, 1].index_add_(0, dom[valid], torch.ones_like(losses[valid], dtype=torch.float64))
    sums[-1] = sums[:-1].sum(0)
    all_reduce_sum(sums, d)
    core.train()
    if sums[-1, 1] == 0:
        return None
    by_domain = {names[j]: sums[j, 0].item() / sums[j, 1].item() for j in range(len(names)) if sums[j, 1] > 0}
    return {"val_loss": sums[-1, 0].item() / sums[-1, 1].item(), "val_by_domain": by_domain}


def _val_shards(cfg: TrainConfig) -> TokenShards | None:
    for path, split in ((cfg.data.val, "val"), (cfg.data.val, "all"), (cfg.data.train, "val")):
        if path:
            try:
                return TokenShards(path, split=split)
            except ValueError:
                continue
    return None


def _export(model, cfg: TrainConfig, d: Dist, out: Path) -> Path | None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not d.is_main:
        return None
    core = unwrap(model)
    with torch.device("meta"):
        export = EmoForCausalLM(core.config)
    export.load_state_dict(full, assign=True)
    extra = {}
    tokenizer = cfg.data.tokenizer or _manifest_tokenizer(cfg.data.train)
    if tokenizer and Path(tokenizer).is_file():
        extra["tokenizer.json"] = Path(tokenizer)
    return save_model(export, out / "final", extra_files=extra)


def _manifest_tokenizer(data_dir: str) -> str | None:
    """The tokenizer.json that `emomoe prepare` stores beside the shards, if present."""
    path = Path(data_dir) / "tokenizer.json"
    return str(path) if path.is_file() else None


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run (or resume) the training described by `cfg`; returns a summary dict."""
    d = init_distributed(cfg.train.device)
    try:
        return _train(cfg, resume, d)
    finally:
        shutdown()


def _train(cfg: TrainConfig, resume: bool, d: Dist) -> dict:
    run = cfg.train
    out = Path(run.out_dir)
    ckpt_root = out / "checkpoints"
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
    shards = TokenShards(cfg.data.train, split="train")
    val_shards = _val_shards(cfg)
    model = build_model(cfg, shards).to(d.device)
    if d.is_main:
        resolved = {**cfg.to_dict(), "resolved_model": unwrap(model).config.to_hf_dict(),
                    "global_batch_size": cfg.global_batch_size, "max_steps": cfg.max_steps,
                    "world_size": d.world_size}
        (out / "config.resolved.json").write_text(json.dumps(resolved, indent=2) + "\n")
    model.train()
    model = wrap_model(model, d, run.parallel)
    optimizer = build_optimizer(model, cfg.optim)
    loader = PackedLoader(shards, cfg.data.seq_len, cfg.global_batch_size, run.micro_batch_size, d.rank,
                          d.world_size, run.seed, cfg.data.weights, cfg.data.weight_by)
    start = 0
    if resume:
        latest = latest_checkpoint(ckpt_root)
        if latest is None:
            _say(d, f"no checkpoint under {ckpt_root}: starting from step 0")
        else:
            state = load_checkpoint(latest, model, optimizer, d)
            loader.load_state_dict(state["loader"])
            start = int(state["step"])
            _say(d, f"resumed from {latest} (step {start})")
    total = cfg.max_steps
    tokens_per_step = cfg.global_batch_size * cfg.data.seq_len
    precision = torch.bfloat16 if run.precision == "bf16" else torch.float32
    peak = measure_matmul_peak(d.device, precision) * d.world_size
    step_flops = flops_per_token(unwrap(model).config, cfg.data.seq_len) * tokens_per_step
    log = MetricsLog(out / "metrics.jsonl", d.is_main, out / "tensorboard" if run.tensorboard else None)
    bar = None
    if d.is_main and run.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)
    bad_in_row, skipped_total, last_eval = 0, 0, None
    window_start, window_tokens = time.perf_counter(), 0
    for step in range(start, total):
        micro_batches = loader.next_step()
        first_seq = step * cfg.global_batch_size + d.rank * (cfg.global_batch_size // d.world_size)
        lr = lr_at(step, total, cfg.optim)
        stats = train_step(model, micro_batches, first_seq, step, cfg, d, optimizer, lr)
        window_tokens += tokens_per_step
        _fault_hook("step", step + 1, d.rank)
        if stats.skipped:
            bad_in_row += 1
            skipped_total += 1
            _say(d, f"step {step + 1}: non-finite loss or gradient (loss {stats.loss}, grad norm "
                    f"{stats.grad_norm}); step skipped ({bad_in_row} in a row)")
            if bad_in_row >= run.max_bad_steps:
                raise RuntimeError(f"stopping: {bad_in_row} consecutive steps with a non-finite loss or "
                                   f"gradient (train.max_bad_steps = {run.max_bad_steps}); lower optim.lr or "
                                   "check the data")
        else:
            bad_in_row = 0
        done = step + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss:.3f}", lb=f"{stats.lb_loss:.3f}", z=f"{stats.z_loss:.2f}",
                            lr=f"{lr:.2e}", refresh=False)
        if done % run.log_interval == 0 or done == total or done == start + 1:
            elapsed = time.perf_counter() - window_start
            tps = window_tokens / max(elapsed, 1e-9)
            record = {"step": done, "tokens": done * tokens_per_step, "loss": stats.loss, "lm_loss": stats.lm_loss,
                      "lb_loss": stats.lb_loss, "z_loss": stats.z_loss, "grad_norm": stats.grad_norm, "lr": lr,
                      "tokens_per_s": tps, "mfu": step_flops / tokens_per_step * tps / peak,
                      "skipped_steps": skipped_total, **routing_stats(stats.expert_counts)}
            if stats.mean_pool_size is not None:
                record["mean_pool_size"] = stats.mean_pool_size
            if run.eval_interval and done % run.eval_interval == 0 and done != total:
                last_eval = evaluate(model, val_shards, cfg, d)
                if last_eval:
                    record.update(last_eval)
            log.write(record)
            if bar is not None:
                bar.set_postfix(loss=f"{stats.loss:.3f}", lb=f"{stats.lb_loss:.3f}", z=f"{stats.z_loss:.2f}",
                                lr=f"{lr:.2e}", tok_s=f"{tps:.0f}")
            window_start, window_tokens = time.perf_counter(), 0
        elif run.eval_interval and done % run.eval_interval == 0 and done != total:
            last_eval = evaluate(model, val_shards, cfg, d)
            if last_eval:
                log.write({"step": done, **last_eval})
        if run.checkpoint_interval and done % run.checkpoint_interval == 0 and done != total:
            save_checkpoint(ckpt_root, done, model, optimizer, loader.state_dict(), d, run.keep, _fault_hook)
            _fault_hook("after-checkpoint", done)
    if bar is not None:
        bar.close()
    last_eval = evaluate(model, val_shards, cfg, d)
    if last_eval:
        log.write({"step": total, **last_eval})
        _say(d, f"validation loss {last_eval['val_loss']:.4f}")
    save_checkpoint(ckpt_root, total, model, optimizer, loader.state_dict(), d, run.keep, _fault_hook)
    final = _export(model, cfg, d, out)
    log.close()
    if final is not None:
        _say(d, f"final model: {final}")
    return {"steps": total, "final": str(final) if final else None, "validation": last_eval,
            "skipped_steps": skipped_total}


def _say(d: Dist, message: str) -> None:
    if d.is_main:
        print(message, file=sys.stderr, flush=True)
