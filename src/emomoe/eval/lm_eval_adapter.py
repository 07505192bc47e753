"""lm-evaluation-harness integration (the `lmeval` extra): the model type "emomoe".

Importing this module registers the model with lm-eval. lm-eval finds built-in models only, so
run its command line through this module, which registers "emomoe" first and then hands every
argument to lm-eval's own CLI:

    python -m emomoe.eval.lm_eval_adapter --model emomoe --model_args path=runs/emo-small/final \\
        --tasks hellaswag --batch_size 1

or from Python: `import emomoe.eval.lm_eval_adapter; lm_eval.simple_evaluate(model="emomoe", ...)`.
model_args: path (checkpoint directory with tokenizer.json), max_length, batch_tokens, pool
(true: the EMO eval pool; default false, the released inference routing), device, dtype.
"""

from __future__ import annotations

import lm_eval.models  # noqa: F401  (registers the built-in models before ours, so they stay available)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from emomoe.eval.batching import Window, routing_without_pool, score_windows
from emomoe.eval.multiple_choice import score_continuations
from emomoe.eval.perplexity import default_max_length


def _flag(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


@register_model("emomoe")
class EmoLM(LM):
    """An emomoe checkpoint as an lm-eval language model (log-likelihoods and greedy generation)."""

    def __init__(self, path: str, max_length: int | None = None, batch_tokens: int = 8192, pool=False,
                 device: str | None = None, dtype: str | None = None, batch_size=None, **_unused) -> None:
        super().__init__()
        from emomoe.data import Tokenizer
        from emomoe.io.checkpoint import load_model

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"  # lm-eval's CLI passes --device cuda by default; run where we can
        self.model = load_model(path, getattr(torch, dtype) if dtype else None, device)
        self.tokenizer = Tokenizer.from_file(path)
        self.max_length = default_max_length(self.model, None if max_length is None else int(max_length))
        self.batch_tokens = int(batch_tokens)
        self.pool = _flag(pool)
        self._device = torch.device(device)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log P(continuation | context), whether greedy decoding yields the continuation) per request."""
        pairs = [tuple(r.args[:2]) for r in requests]
        with routing_without_pool(self.model, active=not self.pool):
            logprob, greedy = score_continuations(self.model, self.tokenizer, pairs, self.max_length,
                                                  self.batch_tokens, progress=not disable_tqdm)
        return [(float(lp), bool(g)) for lp, g in zip(logprob, greedy)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole text after an EOS prefix, in back-to-back windows."""
        windows = []
        for i, r in enumerate(requests):
            ids = [self.tokenizer.eos_id] + self.tokenizer.encode(r.args[0])
            for start in range(0, len(ids) - 1, self.max_length):
                windows.append(Window(i, torch.tensor(ids[start:start + self.max_length + 1])))
        with routing_without_pool(self.model, active=not self.pool):
            nll, _, _ = score_windows(self.model, windows, self.batch_tokens, self.tokenizer.pad_id,
                                      not disable_tqdm, "rolling")
        totals = torch.zeros(len(requests), dtype=torch.float64)
        totals.index_add_(0, torch.tensor([w.doc for w in windows], dtype=torch.long), nll)
        return [-float(t) for t in totals]

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context until a stop string, EOS or max_gen_toks tokens."""
        out = []
        with routing_without_pool(self.model, active=not self.pool):
            for r in requests:
                context, kwargs = r.args[0], dict(r.args[1] or {})
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_new = int(kwargs.get("max_gen_toks", 256))
                ids = self.tokenizer.encode(context) or [self.tokenizer.eos_id]
                new: list[int] = []
                text = ""
                for _ in range(max_new):
                    window = torch.tensor([(ids + new)[-self.max_length:]], device=self._device)
                    token = int(self.model(window).logits[0, -1].argmax())
                    if token == self.tokenizer.eos_id:
                        break
                    new.append(token)
                    text = self.tokenizer.decode(new)
                    if any(s in text for s in until):
                        break
                for stop in until:
                    text = text.split(stop)[0]
                out.append(text)
        return out

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name


def main() -> None:
    """lm-eval's command line with the "emomoe" model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":  # pragma: no cover
    main()
