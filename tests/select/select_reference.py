"""Plain, slow reference computations of the selection scores, from normal full-model forwards."""

import torch
import torch.nn.functional as F


def encode(tokenizer, texts):
    return [torch.tensor(tokenizer.encode(t, add_special_tokens=False).ids) for t in texts]


def top_routed(scores, count):
    """Kept routed ids: highest scores first, ties to the lower id, returned ascending."""
    order = sorted(range(len(scores)), key=lambda e: (-float(scores[e]), e))
    return sorted(order[:count])


@torch.no_grad()
def routings(model, seqs):
    """Per layer, the Routing of every sequence (one normal forward per sequence)."""
    outs = [model(s[None]) for s in seqs]
    return [[o.routings[layer] for o in outs] for layer in range(model.config.num_hidden_layers)]


def global_scores(model, seqs):
    return [torch.cat([r.probs for r in per_layer]).mean(0) for per_layer in routings(model, seqs)]


def frequency_scores(model, seqs):
    out = []
    for per_layer in routings(model, seqs):
        num_routed = per_layer[0].probs.shape[1]
        routed_k = model.config.num_experts_per_tok - 1
        counts = torch.zeros(num_routed)
        for r in per_layer:
            for token in r.expert_ids[:, :routed_k]:
                for e in token:
                    counts[e] += 1
        out.append(counts)
    return out


@torch.no_grad()
def layerwise_kept(model, seqs, keep_routed):
    """Greedy: layer l scored on a forward with layers < l restricted to their kept experts."""
    kept = []
    try:
        for layer in range(model.config.num_hidden_layers):
            probs = torch.cat([model(s[None]).routings[layer].probs for s in seqs]).mean(0)
            ids = top_routed(probs, keep_routed)
            kept.append(ids)
            mask = torch.zeros(probs.shape[0], dtype=torch.bool)
            mask[ids] = True
            model.model.layers[layer].mlp.gate.allowed = mask
    finally:
        for block in model.model.layers:
            block.mlp.gate.allowed = None
    return kept


@torch.no_grad()
def easy_ep_scores(model, seqs):
    """EASY-EP with an explicit loop over tokens and assignments, using hooks on a normal forward."""
    cfg = model.config
    routed_k = cfg.num_experts_per_tok - 1
    scores = [torch.zeros(cfg.num_experts - 1, dtype=torch.float64) for _ in range(cfg.num_hidden_layers)]
    for s in seqs:
        captured = {}
        hooks = []
        for i, block in enumerate(model.model.layers):
            hooks.append(block.pre_feedforward_layernorm.register_forward_hook(
                lambda mod, inp, out, i=i, c=captured: c.__setitem__(("h", i), (inp[0][0], out[0]))))
            hooks.append(block.mlp.register_forward_hook(
                lambda mod, inp, out, i=i, c=captured: c.__setitem__(("moe", i), (out[0][0], out[1]))))
        model(s[None])
        for h in hooks:
            h.remove()
        for i, block in enumerate(model.model.layers):
            residual, normed = captured[("h", i)]
            moe_out, routing = captured[("moe", i)]
            ex = block.mlp.experts
            for n in range(residual.shape[0]):
                turn = 1 - F.cosine_similarity(residual[n], residual[n] + moe_out[n], dim=0)
                for j in range(routed_k):
                    e = int(routing.expert_ids[n, j])
                    x = normed[n]
                    y = ex.down_proj[e] @ (F.silu(ex.gate_proj[e] @ x) * (ex.up_proj[e] @ x))
                    scores[i][e] += float(routing.weights[n, j] * y.norm() * turn)
    return scores
