"""Text generation metrics: sacrebleu, bleu and rouge (the ``sacrebleu`` and ``rouge_score`` packages)."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

from ..errors import DataError
from ._inputs import _check_pair, _require, _text_list


def _references_per_prediction(predictions, references, metric: str) -> tuple[list[str], list[list[str]]]:
    preds = _text_list(predictions, "predictions")
    refs = _text_list(references, "references")
    _check_pair(preds, refs)
    refs = [[r] if isinstance(r, str) else _text_list(r, "references[i]") for r in refs]
    for i, p in enumerate(preds):
        if not isinstance(p, str):
            raise DataError(
                f'"{metric}" scores detokenized text: predictions[{i}] is a {type(p).__name__}, not a str. '
                f"Decode token ids first (tokenizer.batch_decode(ids, skip_special_tokens=True))."
            )
    return preds, refs


def _sacrebleu(
    predictions,
    references,
    smooth_method="exp",
    smooth_value=None,
    force=False,
    lowercase=False,
    tokenize=None,
    use_effective_order=False,
):
    sacrebleu = _require("sacrebleu", "sacrebleu", "sacrebleu")
    preds, refs = _references_per_prediction(predictions, references, "sacrebleu")
    n_refs = len(refs[0])
    if any(len(r) != n_refs for r in refs):
        raise DataError("sacrebleu needs the same number of references for every prediction.")
    transposed = [[r[i] for r in refs] for i in range(n_refs)]
    out = sacrebleu.corpus_bleu(
        preds,
        transposed,
        smooth_method=smooth_method,
        smooth_value=smooth_value,
        force=force,
        lowercase=lowercase,
        use_effective_order=use_effective_order,
        **({"tokenize": tokenize} if tokenize else {}),
    )
    return {
        "score": float(out.score),
        "counts": [int(c) for c in out.counts],
        "totals": [int(t) for t in out.totals],
        "precisions": [float(p) for p in out.precisions],
        "bp": float(out.bp),
        "sys_len": int(out.sys_len),
        "ref_len": int(out.ref_len),
    }


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    counts: Counter = Counter()
    for order in range(1, max_order + 1):
        for i in range(len(tokens) - order + 1):
            counts[tuple(tokens[i : i + order])] += 1
    return counts


def _bleu(predictions, references, tokenizer=None, max_order=4, smooth=False):
    """evaluate's "bleu": the tensorflow/nmt corpus BLEU on 13a-tokenized text, a score in [0, 1]."""
    if tokenizer is None:
        tok13a = _require("sacrebleu.tokenizers.tokenizer_13a", "sacrebleu", "bleu").Tokenizer13a()

        def tokenizer(line: str) -> list[str]:
            return tok13a(line).split()

    preds, refs = _references_per_prediction(predictions, references, "bleu")
    ref_tokens = [[tokenizer(r) for r in rs] for rs in refs]
    pred_tokens = [tokenizer(p) for p in preds]

    matches = [0] * max_order
    possible = [0] * max_order
    reference_length = 0
    translation_length = 0
    for rs, t in zip(ref_tokens, pred_tokens):
        reference_length += min(len(r) for r in rs)
        translation_length += len(t)
        merged: Counter = Counter()
        for r in rs:
            merged |= _ngrams(r, max_order)
        overlap = _ngrams(t, max_order) & merged
        for ngram, count in overlap.items():
            matches[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            if len(t) - order + 1 > 0:
                possible[order - 1] += len(t) - order + 1
    precisions = [0.0] * max_order
    for i in range(max_order):
        if smooth:
            precisions[i] = (matches[i] + 1.0) / (possible[i] + 1.0)
        elif possible[i] > 0:
            precisions[i] = matches[i] / possible[i]
    geo_mean = math.exp(sum(math.log(p) / max_order for p in precisions)) if min(precisions) > 0 else 0.0
    ratio = translation_length / reference_length if reference_length > 0 else 0.0
    if ratio > 1.0:
        bp = 1.0
    elif ratio > 0.0:
        bp = math.exp(1.0 - 1.0 / ratio)
    else:
        bp = 0.0
    return {
        "bleu": float(geo_mean * bp),
        "precisions": [float(p) for p in precisions],
        "brevity_penalty": float(bp),
        "length_ratio": float(ratio),
        "translation_length": int(translation_length),
        "reference_length": int(reference_length),
    }


class _RougeTokenizer:
    """Wraps a plain ``str -> list[str]`` function into the object rouge_score expects."""

    def __init__(self, fn: Callable[[str], list[str]]):
        self.fn = fn

    def tokenize(self, text: str) -> list[str]:
        return self.fn(text)


def _rouge(predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=False, tokenizer=None):
    rouge_scorer = _require("rouge_score.rouge_scorer", "rouge_score", "rouge")
    preds = _text_list(predictions, "predictions")
    refs = _text_list(references, "references")
    _check_pair(preds, refs)
    if rouge_types is None:
        rouge_types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    if tokenizer is not None and not hasattr(tokenizer, "tokenize"):
        tokenizer = _RougeTokenizer(tokenizer)
    scorer = rouge_scorer.RougeScorer(rouge_types=list(rouge_types), use_stemmer=use_stemmer, tokenizer=tokenizer)
    per_example = []
    for ref, pred in zip(refs, preds):
        if isinstance(ref, str):
            per_example.append(scorer.score(ref, pred))
        else:
            per_example.append(scorer.score_multi(list(ref), pred))
    if use_aggregator:
        return {k: float(sum(s[k].fmeasure for s in per_example) / len(per_example)) for k in rouge_types}
    return {k: [float(s[k].fmeasure) for s in per_example] for k in rouge_types}
