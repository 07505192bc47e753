import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch

from emomoe.analysis import analyze, collect_routing, specialisation, write_report
from emomoe.eval import limit_per_domain


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.links, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


def test_routing_counts_equal_direct_computation(tok, docs, tiny_model):
    model = tiny_model()
    stats = collect_routing(model, tok, docs, max_length=6, batch_tokens=32)
    assert stats.domains == ["code", "health", "news"]
    for i, d in enumerate(docs):
        ids = tok.encode(d.text) + [tok.eos_id]
        inputs = torch.tensor(ids[:-1])
        assert int(stats.doc_tokens[i]) == inputs.numel()
        expected = torch.zeros(2, 7)
        probs = torch.zeros(2, 7)
        for start in range(0, inputs.numel(), 6):  # back-to-back windows, each a fresh context
            with torch.no_grad():
                out = model(inputs[None, start:start + 6])
            for layer, r in enumerate(out.routings):
                expected[layer] += torch.bincount(r.expert_ids[:, :2].reshape(-1), minlength=7).float()
                probs[layer] += r.probs.sum(0)
        for layer in range(2):
            assert torch.equal(stats.doc_counts[layer][i], expected[layer])
            assert torch.allclose(stats.doc_probs[layer][i], probs[layer], atol=1e-5)
    assert stats.domain_counts(0).sum() == 2 * stats.doc_tokens.sum()  # k_r = 2 assignments per token


def test_specialisation_fields(tok, docs, tiny_model):
    metrics = specialisation(collect_routing(tiny_model(), tok, docs), top_m=3)
    assert metrics["settings"]["top_m"] == 3 and metrics["settings"]["clusters"] == 3
    for r in metrics["layers"]:
        assert 0 <= r["nmi"] <= 1 and 3 / 7 - 1e-9 <= r["coherence"] <= 1
        assert r["coherence_uniform"] == pytest.approx(3 / 7)
        assert set(r["coverage"]) == {"code", "health", "news"} and 1 <= r["coverage_mean"] <= 7
        assert 1 / 3 <= r["cluster_purity"] <= 1
    json.dumps(metrics)  # JSON-able as is


@pytest.fixture
def two_model_report(tok, docs, tmp_path, tiny_model):
    results = {}
    for name, model in (("emo", tiny_model(0)), ("standard <std>", tiny_model(1, router="standard"))):
        stats = collect_routing(model, tok, docs)
        results[name] = (stats, specialisation(stats))
    return write_report(results, tmp_path / "report", source="unit test")


def test_report_is_self_contained_html(two_model_report):
    pytest.importorskip("matplotlib")
    page = Page()
    page.feed(two_model_report.read_text())
    assert page.tags[0] == "html" and "table" in page.tags
    assert len(page.images) == 1 + 2 * 2  # metric curves + (2 layers x 2 models) heatmaps
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert not [link for link in page.links if "://" in link]  # nothing loaded from the network
    text = " ".join(page.text)
    assert "standard <std>" in text and "all layers" in text  # names escaped, shown as text
    files = {p.name for p in two_model_report.parent.iterdir()}
    assert "metrics.json" in files and "heatmap_0_emo_layer1.png" in files


def test_analyze_from_checkpoints(tok, docs, tmp_path, tiny_model):
    import json as _json

    from emomoe import save_model

    tok_file = tok.save(tmp_path / "tokenizer.json")
    ckpt = save_model(tiny_model(), tmp_path / "emo", extra_files={"tokenizer.json": tok_file})
    data = tmp_path / "val.jsonl"
    data.write_text("".join(_json.dumps({"text": d.text, "domain": d.domain}) + "\n" for d in docs))
    path = analyze({"emo": ckpt}, data, tmp_path / "out", max_docs_per_domain=2)
    metrics = _json.loads((path.parent / "metrics.json").read_text())
    assert metrics["emo"]["settings"]["documents"] == 6
    assert len(limit_per_domain(docs, 1)) == 3


def find_browser():
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(find_browser() is None, reason="no headless Chromium installed")
def test_report_renders_in_headless_chromium(two_model_report, tmp_path):
    pytest.importorskip("matplotlib")
    shot = tmp_path / "shot.png"
    cmd = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000", f"--screenshot={shot}",
           two_model_report.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not a blank one
