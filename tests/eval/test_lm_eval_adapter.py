"""The lm-eval model type (skipped without the `lmeval` extra)."""

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("lm_eval")

from emomoe.eval import score_continuations  # noqa: E402
from emomoe.eval.lm_eval_adapter import EmoLM  # noqa: E402


def req(*args):
    return SimpleNamespace(args=args)


def test_requests(ckpts):
    lm = EmoLM(path=str(ckpts[0]))
    pairs = [("The doctor", " checked"), ("", "Rain")]
    out = lm.loglikelihood([req(*p) for p in pairs], disable_tqdm=True)
    ref, _ = score_continuations(lm.model, lm.tokenizer, pairs)
    assert [o[0] for o in out] == pytest.approx(ref.tolist())
    rolling = lm.loglikelihood_rolling([req("Rain is expected")], disable_tqdm=True)
    assert rolling[0] == pytest.approx(score_continuations(lm.model, lm.tokenizer, [("", "Rain is expected")])[0][0])
    text = lm.generate_until([req("def add", {"until": ["\n"], "max_gen_toks": 5})], disable_tqdm=True)[0]
    assert isinstance(text, str) and "\n" not in text


def test_simple_evaluate_local_task(ckpts, tmp_path):
    import lm_eval

    data = tmp_path / "mc.jsonl"
    rows = [{"q": "Which is code?", "choices": ["def add", "the doctor"], "label": 0},
            {"q": "Which is news?", "choices": ["print(1)", "Stocks fell"], "label": 1}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"Question: {{q}}\\nAnswer:\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n")
    from lm_eval.tasks import TaskManager

    result = lm_eval.simple_evaluate(model="emomoe", model_args=f"path={ckpts[0]}", tasks=["tiny_mc"],
                                     task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    assert 0.0 <= result["results"]["tiny_mc"]["acc,none"] <= 1.0
