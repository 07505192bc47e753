"""Training: loss falls, global LB is the global batch's, resume is exact, bad steps are handled."""

import copy
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from emomoe.data import PackedLoader, TokenShards
from emomoe.model import EmoForCausalLM, load_balancing_loss, segment_ids
from emomoe.train import config as train_config
from emomoe.train.distributed import Dist
from emomoe.train.loop import train
from emomoe.train.optim import build_optimizer, lr_at
from emomoe.train.step import sequence_pool_sizes, train_step


def run(cfg_dict, resume=False):
    return train(train_config.from_dict(copy.deepcopy(cfg_dict)), resume=resume)


def metrics(out_dir):
    """step -> last record with a loss (a resumed run rewrites later steps)."""
    records = {}
    for line in (out_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            records[rec["step"]] = rec
    return records


def weights(out_dir):
    return load_file(out_dir / "final" / "model.safetensors")


def assert_same_weights(a, b, tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)


def test_tiny_run_lowers_loss_on_real_text(train_cfg, tmp_path):
    cfg = copy.deepcopy(train_cfg)
    cfg["train"].update(max_steps=50, log_interval=5, micro_batch_size=8)
    summary = run(cfg)
    recs = metrics(tmp_path / "run")
    first, last = recs[1]["lm_loss"], recs[50]["lm_loss"]
    assert first > math.log(512) - 0.5
    assert last < first - 0.8, (first, last)
    assert summary["validation"]["val_loss"] < first - 0.3
    assert set(summary["validation"]["val_by_domain"]) <= {"code", "prose"}
    assert (tmp_path / "run" / "final" / "tokenizer.json").is_file()
    assert (tmp_path / "run" / "config.resolved.json").is_file()
    for key in ("tokens_per_s", "mfu", "experts_used", "load_entropy", "mean_pool_size", "grad_norm", "lr"):
        assert key in recs[50], key


def test_same_seed_same_loss_curve(train_cfg, tmp_path):
    cfg = copy.deepcopy(train_cfg)
    run(cfg)
    first = metrics(tmp_path / "run")
    cfg["train"]["out_dir"] = str(tmp_path / "again")
    run(cfg)
    again = metrics(tmp_path / "again")
    assert [r["loss"] for r in first.values()] == [r["loss"] for r in again.values()]


def _step_setup(corpus_dir, micro, scope="global"):
    cfg = train_config.from_dict({
        "model": {"preset": "tiny"}, "data": {"train": str(corpus_dir), "seq_len": 32},
        "train": {"global_batch_size": 8, "micro_batch_size": micro, "max_steps": 3, "lb_scope": scope,
                  "lb_weight": 0.5}})
    torch.manual_seed(0)
    shards = TokenShards(corpus_dir)
    model = EmoForCausalLM(cfg.model_config().replace(eos_token_id=shards.eos_id)).train()
    loader = PackedLoader(shards, 32, 8, micro, seed=0)
    return cfg, model, loader


def test_global_lb_equals_lb_of_concatenated_batch(corpus_dir):
    cfg, model, loader = _step_setup(corpus_dir, micro=2)
    reference = copy.deepcopy(model)
    micro_batches = loader.next_step()
    stats = train_step(model, micro_batches, 0, 0, cfg, Dist(), build_optimizer(model, cfg.optim), 1e-3)
    # the LB on the whole global batch in one forward, with the same pools
    batch = {k: torch.cat([mb[k] for mb in micro_batches]) for k in micro_batches[0]}
    pools = sequence_pool_sizes(list(range(8)), 32, *reference.config.pool_range(), seed=0, step=0)
    with torch.no_grad():
        out = reference(batch["input_ids"], doc_ids=batch["doc_ids"], pool_sizes=pools)
    tokens = batch["input_ids"].numel()
    expected = torch.stack([load_balancing_loss(r.mean_probs, r.expert_counts / tokens, 2)
                            for r in out.routings]).mean()
    assert stats.lb_loss == pytest.approx(expected.item(), rel=1e-6)
    _, seg_count = segment_ids(batch["doc_ids"])
    assert pools.shape[0] == seg_count


def _two_steps(corpus_dir, micro, scope):
    cfg, model, loader = _step_setup(corpus_dir, micro, scope)
    opt = build_optimizer(model, cfg.optim)
    return [train_step(model, loader.next_step(), s * 8, s, cfg, Dist(), opt, 1e-3) for s in range(2)]


def test_local_lb_is_per_micro_batch(corpus_dir):
    whole_global = _two_steps(corpus_dir, 8, "global")
    whole_local = _two_steps(corpus_dir, 8, "local")
    split_local = _two_steps(corpus_dir, 2, "local")
    assert whole_local[0].lb_loss == pytest.approx(whole_global[0].lb_loss, rel=1e-6)
    assert split_local[0].lb_loss != pytest.approx(whole_local[0].lb_loss, rel=1e-3)


def test_accumulation_split_gives_the_same_update(corpus_dir):
    scope = "global"
    results = []
    for micro in (8, 2):
        cfg, model, loader = _step_setup(corpus_dir, micro, scope)
        opt = build_optimizer(model, cfg.optim)
        losses = [train_step(model, loader.next_step(), s * 8, s, cfg, Dist(), opt, 1e-3) for s in range(2)]
        results.append((losses, model.state_dict()))
    (a_stats, a_state), (b_stats, b_state) = results
    for a, b in zip(a_stats, b_stats):
        assert a.loss == pytest.approx(b.loss, rel=1e-6)
        assert a.lb_loss == pytest.approx(b.lb_loss, rel=1e-6)
    assert_same_weights(a_state, b_state, 1e-5)


def _torchrun(args, cwd, extra_env=None, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--standalone",
           "-m", "emomoe", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _write_config(cfg_dict, path):
    lines = []
    for section, values in cfg_dict.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_equal_one_process(train_cfg, tmp_path, parallel):
    cfg = copy.deepcopy(train_cfg)
    cfg["train"].update(max_steps=3, micro_batch_size=2)  # 1 process: 4 micro-batches per step
    run(cfg)
    single = metrics(tmp_path / "run")
    cfg["train"].update(out_dir=str(tmp_path / "dist"), parallel=parallel)  # 2 processes x 2 micro-batches
    proc = _torchrun(["--config", str(_write_config(cfg, tmp_path / "c.toml"))], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    double = metrics(tmp_path / "dist")
    for step in (1, 2, 3):
        for key in ("loss", "lm_loss", "lb_loss", "z_loss"):
            assert double[step][key] == pytest.approx(single[step][key], rel=1e-5, abs=1e-6), (step, key)
    assert_same_weights(weights(tmp_path / "run"), weights(tmp_path / "dist"), 1e-5)


def _cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "emomoe", "train", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_resume_after_sigkill_is_exact(train_cfg, tmp_path):
    cfg = copy.deepcopy(train_cfg)
    cfg["train"].update(max_steps=8, checkpoint_interval=2, keep=2)
    run(cfg)
    straight = metrics(tmp_path / "run")
    cfg["train"]["out_dir"] = str(tmp_path / "killed")
    config = str(_write_config(cfg, tmp_path / "c.toml"))
    proc = _cli(["--config", config], {"EMOMOE_FAULT": "after-checkpoint:4"})
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step-0000002",
                                                                                        "step-0000004"]
    # a crash while checkpoint 6 is being written leaves checkpoint 4 intact
    proc = _cli(["--config", config, "--resume"], {"EMOMOE_FAULT": "checkpoint-written:6"})
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    assert names == [".tmp-step-0000006", "step-0000002", "step-0000004"]
    proc = _cli(["--config", config, "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "step-0000004" in proc.stderr
    resumed = metrics(tmp_path / "killed")
    for step in range(1, 9):
        assert resumed[step]["loss"] == straight[step]["loss"], step
    assert_same_weights(weights(tmp_path / "run"), weights(tmp_path / "killed"), 0)


def test_bad_steps_are_skipped_then_stop(train_cfg, tmp_path, monkeypatch):
    import emomoe.train.step as step_mod

    real = step_mod.lm_sums
    calls = {"n": 0}

    def flaky(logits, labels):
        calls["n"] += 1
        ce, z = real(logits, labels)
        return (ce * float("nan"), z) if calls["n"] in (5, 6, 7, 8) else (ce, z)  # step 2 (4 micro-batches)

    monkeypatch.setattr(step_mod, "lm_sums", flaky)
    summary = run(train_cfg)
    assert summary["skipped_steps"] == 1
    assert math.isfinite(metrics(tmp_path / "run")[6]["loss"])

    def broken(logits, labels):
        return real(logits, labels)[0] * math.inf, 0 * logits.sum()

    monkeypatch.setattr(step_mod, "lm_sums", broken)
    cfg = copy.deepcopy(train_cfg)
    cfg["train"].update(out_dir=str(tmp_path / "bad"), max_bad_steps=3)
    with pytest.raises(RuntimeError, match="3 consecutive steps with a non-finite loss"):
        run(cfg)


def test_standard_router_never_masks_experts(train_cfg, tmp_path, monkeypatch):
    from emomoe.model.router import Router

    seen = []
    original = Router.forward

    def spy(self, *args, **kwargs):
        routing = original(self, *args, **kwargs)
        seen.append(routing.pool_mask)
        return routing

    monkeypatch.setattr(Router, "forward", spy)
    cfg = copy.deepcopy(train_cfg)
    cfg["model"].update(router="standard")
    cfg["train"]["max_steps"] = 2
    run(cfg)
    assert seen and all(mask is None for mask in seen)
    seen.clear()
    cfg["model"]["router"] = "emo"
    cfg["train"]["out_dir"] = str(tmp_path / "emo")
    run(cfg)
    assert any(mask is not None for mask in seen)


def test_init_from_checkpoint_with_frozen_router(train_cfg, tmp_path):
    cfg = copy.deepcopy(train_cfg)
    cfg["train"]["max_steps"] = 2
    run(cfg)
    start = weights(tmp_path / "run")
    cfg["train"].update(out_dir=str(tmp_path / "ft"), init_from=str(tmp_path / "run" / "final"),
                        freeze_router=True)
    run(cfg)
    tuned = weights(tmp_path / "ft")
    assert torch.equal(tuned["model.layers.0.mlp.gate.weight"], start["model.layers.0.mlp.gate.weight"])
    assert not torch.equal(tuned["model.layers.0.mlp.experts.0.up_proj.weight"],
                           start["model.layers.0.mlp.experts.0.up_proj.weight"])


def test_lr_schedules():
    cfg = train_config.OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(99, 100, cfg) == pytest.approx(0.1)
    wsd = train_config.OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.0, schedule="wsd", decay_frac=0.2)
    assert lr_at(50, 100, wsd) == 1.0 and lr_at(79, 100, wsd) == 1.0
    assert lr_at(99, 100, wsd) == pytest.approx(0.0)


def test_error_in_one_rank_stops_the_whole_job(train_cfg, tmp_path):
    cfg = copy.deepcopy(train_cfg)
    cfg["train"].update(max_steps=50, out_dir=str(tmp_path / "dist"))
    proc = _torchrun(["--config", str(_write_config(cfg, tmp_path / "c.toml"))], tmp_path,
                     {"EMOMOE_FAULT": "raise:2:1"})
    assert proc.returncode != 0
    assert "injected fault in rank 1 after step 2" in proc.stderr
    assert not (tmp_path / "dist" / "final").exists()
