"""Evaluation/predict alone: trainwright vs transformers.Trainer on the SST-2 dev set and the IMDB sample.

    python bench/bench_eval.py                          # SST-2 dev (872) + IMDB valid (200), eval batch 8 and 32
    python bench/bench_eval.py --imdb-split all         # all 1,000 IMDB reviews

MiniLM with a seeded classification head (no training: the same weights for both), max_length 128 for
SST-2 and 512 for IMDB. Each trainer runs ``predict()`` (which also computes the loss and the accuracy);
the two alternate. trainwright runs each batch sorted by length and returns the outputs in dataset order;
the table checks that both return the same logits in the same order (max |difference|).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import _common as C


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="8,32", help="per_device_eval_batch_size values (8 is both defaults)")
    p.add_argument("--imdb-split", choices=("valid", "train", "all"), default="valid")
    p.add_argument("--imdb-rows", type=int, default=None)
    p.add_argument("--sst2-rows", type=int, default=None)
    p.add_argument("--sets", default="sst2,imdb")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-docs", action="store_true")
    return p.parse_args()


def predict(kind, model, tokenizer, data, batch_size, seed):
    if kind == "hf":
        from transformers import Trainer, TrainingArguments
    else:
        from trainwright import Trainer, TrainingArguments
    C.fresh_gc()
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix=f"eval_{kind}_"), per_device_eval_batch_size=batch_size,
                             report_to="none", disable_tqdm=True, seed=seed)
    trainer = Trainer(model=model, args=args, processing_class=tokenizer, compute_metrics=C.accuracy)
    stats = {"tokens": 0, "padded": 0}

    def hook(module, a, kw):
        stats["padded"] += kw["input_ids"].numel()
        stats["tokens"] += int(kw["attention_mask"].sum())
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    with C.PeakMemory() as mem:
        t = time.perf_counter()
        out = trainer.predict(data)
        seconds = time.perf_counter() - t
    handle.remove()
    logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
    return {"s": seconds, "samples_s": len(data) / seconds, "padding": 1 - stats["tokens"] / stats["padded"],
            "accuracy": out.metrics["test_accuracy"], "peak_mib": mem.mib, "logits": logits}


def main(opts):
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification
    info, load0, tokenizer = C.start()
    torch.manual_seed(opts.seed)
    model = AutoModelForSequenceClassification.from_pretrained(C.minilm_path(), num_labels=2).eval()
    sets = {}
    if "sst2" in opts.sets:
        sets["SST-2 dev"] = C.tokenized(tokenizer, *C.read_sst2("dev", opts.sst2_rows), max_length=128)
    if "imdb" in opts.sets:
        sets[f"IMDB {opts.imdb_split}"] = C.tokenized(tokenizer, *C.read_imdb(opts.imdb_split, opts.imdb_rows),
                                                      max_length=512)
    print(f"{info['cpu']}, {info['cores']} cores, load {load0}")
    rows, ratios = [], []
    for name, data in sets.items():
        for bs in [int(b) for b in opts.batch_sizes.split(",")]:
            res = {"hf": [], "ours": []}
            for r in range(opts.repeats):
                for kind in (("hf", "ours") if r % 2 == 0 else ("ours", "hf")):
                    res[kind].append(predict(kind, model, tokenizer, data, bs, opts.seed))
                    x = res[kind][-1]
                    print(f"  {name} bs {bs} {kind:>4}: {x['s']:6.1f}s {x['samples_s']:7.1f} samples/s "
                          f"padding {x['padding']:.1%}", flush=True)
            diff = float(np.abs(res["hf"][0]["logits"] - res["ours"][0]["logits"]).max())
            med = {k: C.best_of([{key: r[key] for key in ("s", "samples_s", "padding", "accuracy", "peak_mib")}
                                 for r in v]) for k, v in res.items()}
            for kind, label in (("hf", "transformers"), ("ours", "trainwright")):
                m = med[kind]
                rows.append([name, str(bs), label, m["s"], m["samples_s"], C.spread(res[kind], "samples_s"),
                             f"{m['padding']:.1%}", f"{m['accuracy']:.4f}", m["peak_mib"]])
            ratios.append([name, str(bs), f"{med['ours']['samples_s'] / med['hf']['samples_s']:.2f}x", f"{diff:.1e}"])
    load1 = C.load_average()
    tab = C.table(["data", "eval batch", "trainer", "predict s (fastest)", "samples/s (fastest)",
                   "samples/s, every run", "padding", "accuracy", "peak MiB"],
                  rows)
    rtab = C.table(["data", "eval batch", "samples/s ours / HF", "max abs logit difference"], ratios)
    print("\n" + tab + "\n\n" + rtab)
    body = C.header_lines(info, load0, load1) + [
        "- MiniLM with a seeded (untrained) classification head, the same weights for both; `predict()` wall "
        "time (includes the loss and the accuracy). SST-2 max_length 128, IMDB max_length 512.",
        f"- {opts.repeats} alternating repeat(s); the fastest run of each is shown (other jobs only slow a run down), "
        "every run listed.",
        "- trainwright sorts each rank's rows by length (batches of similar length), lets batches of short rows take "
        "more rows within the first batch's padded tokens (on a CPU at most 2,048), and puts the outputs back in "
        "dataset order; the last column shows both return the same logits in the same order.", "", tab, "", rtab]
    if not opts.no_docs:
        C.write_section("eval", "Evaluation / predict alone: SST-2 dev and IMDB", "\n".join(body))


if __name__ == "__main__":
    sys.exit(main(parse()))
