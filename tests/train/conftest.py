"""A small real-text corpus (the installed Python standard library's sources and docstrings), prepared once."""

import importlib
import inspect
import json

import pytest

from emomoe.data import prepare, train_tokenizer

MODULES = ["json.decoder", "json.encoder", "csv", "argparse", "textwrap", "string", "calendar", "fractions",
           "statistics", "heapq", "bisect", "shlex", "difflib", "pprint", "base64", "gettext", "locale",
           "ipaddress", "configparser", "dataclasses", "enum", "functools", "glob", "fnmatch"]


def stdlib_documents():
    """Real text in two domains: code (module sources in pieces) and prose (docstrings)."""
    docs = []
    for name in MODULES:
        module = importlib.import_module(name)
        source = inspect.getsource(module)
        for i in range(0, min(len(source), 12000), 1500):
            docs.append({"text": source[i:i + 1500], "domain": "code", "source": name})
        for obj in vars(module).values():
            doc = inspect.getdoc(obj) if callable(obj) else None
            if doc and len(doc) > 200 and getattr(obj, "__module__", None) == module.__name__:
                docs.append({"text": doc, "domain": "prose", "source": name})
    return docs


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = stdlib_documents()
    jsonl = root / "docs.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in docs))
    tok = train_tokenizer(files=[jsonl], vocab_size=512)
    tok.save(root / "tok")
    prepare([jsonl], root / "tok" / "tokenizer.json", root / "data", val_frac=0.1, workers=1)
    return root / "data"


@pytest.fixture
def train_cfg(corpus_dir, tmp_path):
    """A base tiny config as nested dicts (tests tweak and pass to from_dict)."""
    return {
        "model": {"preset": "tiny"},
        "data": {"train": str(corpus_dir), "seq_len": 64},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"out_dir": str(tmp_path / "run"), "global_batch_size": 8, "micro_batch_size": 2,
                  "max_steps": 6, "log_interval": 1, "eval_interval": 0, "eval_batches": 2,
                  "checkpoint_interval": 0, "progress": False},
    }
