"""transformers integration (`pip install emomoe[hf]`): importing this module registers `emo`.

    import emomoe.hf  # noqa: F401
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("runs/emo-small/final")   # offline, no remote code
    out = model.generate(input_ids, max_new_tokens=32)

See docs/generate.md.
"""

try:
    from transformers import AutoConfig, AutoModelForCausalLM
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("emomoe.hf needs transformers: pip install 'emomoe[hf]'") from exc

from emomoe.hf.modeling import EmoHFConfig, EmoHFForCausalLM


def register() -> None:
    """Register the `emo` model type with AutoConfig / AutoModelForCausalLM (idempotent)."""
    try:
        AutoConfig.register("emo", EmoHFConfig)
    except ValueError:
        pass  # already registered (a second import, or a reload)
    try:
        AutoModelForCausalLM.register(EmoHFConfig, EmoHFForCausalLM)
    except ValueError:
        pass


register()

__all__ = ["EmoHFConfig", "EmoHFForCausalLM", "register"]
