"""SQuAD v1.1 and v2.0 scoring for ``trainwright.metrics.load("squad")`` / ``load("squad_v2")``.

The same inputs, result keys and numbers as Hugging Face ``evaluate``'s ``squad`` and ``squad_v2``, which follow
the official SQuAD evaluation scripts:

* an answer is normalised before comparing: lower-cased, punctuation removed, the articles "a", "an", "the"
  removed as whole words, runs of whitespace collapsed to one space;
* exact match: the normalised prediction equals a normalised gold answer; F1: the harmonic mean of the
  token-level precision and recall against a gold answer (tokens = the normalised text split on whitespace,
  counted with multiplicity); each question scores its best gold answer; results are percentages (0-100).

``squad``: ``predictions=[{"id", "prediction_text"}]``, ``references=[{"id", "answers": {"text": [...],
"answer_start": [...]}}]`` -> ``{"exact_match", "f1"}``. A question without a prediction scores 0 (with a warning).

``squad_v2`` adds unanswerable questions (``answers["text"] == []``, whose only right answer is the empty string)
and ``"no_answer_probability"`` in each prediction: a question whose probability is above ``no_answer_threshold``
(default 1.0, i.e. never) counts as answered "no answer". Keys: ``exact``, ``f1``, ``total``; the same three for
the answerable (``HasAns_*``) and unanswerable (``NoAns_*``) questions when there are any; and ``best_exact`` /
``best_f1`` with the no-answer threshold that would maximise them (``best_*_thresh``).
"""
from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from typing import Any

from ..errors import DataError

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


# ================================================================================================ text
def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in str(text).lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, empty_agrees: bool = True) -> float:
    """Token F1 of one prediction against one gold answer. With ``empty_agrees`` (SQuAD v2's rule) two answers
    that normalise to nothing agree (1.0); the v1 script scores every pair without a common token 0."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if empty_agrees and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


# ================================================================================================ inputs
def _records(items: Any, what: str, keys: tuple[str, ...]) -> list[dict]:
    if isinstance(items, dict) or isinstance(items, (str, bytes)):
        raise DataError(f"`{what}` must be a list of dicts, one per question, each with the keys {list(keys)}.")
    out = list(items)
    for i, item in enumerate(out):
        missing = [k for k in keys if not isinstance(item, dict) or k not in item]
        if missing:
            raise DataError(f"`{what}`[{i}] has no {missing[0]!r}: each item must be a dict with the keys "
                            f"{list(keys)}, e.g. " + ('{"id": "q1", "prediction_text": "Denver Broncos"}'
                                                      if what == "predictions" else
                                                      '{"id": "q1", "answers": {"text": ["Denver Broncos"], '
                                                      '"answer_start": [177]}}') + ".")
    return out


def _gold_texts(reference: dict) -> list[str]:
    answers = reference["answers"]
    if isinstance(answers, dict):
        texts = answers.get("text", [])
    else:  # the raw SQuAD json form: a list of {"text", "answer_start"}
        texts = [a["text"] if isinstance(a, dict) else a for a in answers]
    if isinstance(texts, str):
        texts = [texts]
    return [str(t) for t in texts]


def _predictions_by_id(predictions: list[dict]) -> dict[str, dict]:
    return {str(p["id"]): p for p in predictions}


# ================================================================================================ squad (v1.1)
def squad(predictions: Any, references: Any) -> dict[str, float]:
    predictions = _records(predictions, "predictions", ("id", "prediction_text"))
    references = _records(references, "references", ("id", "answers"))
    if not references:
        raise DataError("`references` is empty: there is nothing to score.")
    by_id = _predictions_by_id(predictions)
    exact = f1 = 0.0
    missing = []
    for ref in references:
        qid = str(ref["id"])
        if qid not in by_id:
            missing.append(qid)
            continue
        pred = str(by_id[qid]["prediction_text"])
        golds = _gold_texts(ref)
        if golds:
            exact += max(exact_match_score(pred, g) for g in golds)
            f1 += max(f1_score(pred, g, empty_agrees=False) for g in golds)
    if missing:
        warnings.warn(f"squad: {len(missing)} of {len(references)} questions have no prediction (e.g. id "
                      f"{missing[0]!r}); they score 0.", stacklevel=3)
    total = len(references)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


# ================================================================================================ squad_v2
def squad_v2(predictions: Any, references: Any, no_answer_threshold: float = 1.0) -> dict[str, float]:
    predictions = _records(predictions, "predictions", ("id", "prediction_text", "no_answer_probability"))
    references = _records(references, "references", ("id", "answers"))
    if not references:
        raise DataError("`references` is empty: there is nothing to score.")
    by_id = _predictions_by_id(predictions)
    missing = [str(r["id"]) for r in references if str(r["id"]) not in by_id]
    if missing:
        raise DataError(f"squad_v2: {len(missing)} of {len(references)} questions have no prediction (e.g. id "
                        f"{missing[0]!r}). Give every question a prediction; an empty prediction_text means "
                        f"'no answer'.")
    has_answer: dict[str, bool] = {}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for ref in references:
        qid = str(ref["id"])
        texts = _gold_texts(ref)
        has_answer[qid] = bool(texts)
        golds = [t for t in texts if normalize_answer(t)] or [""]  # unanswerable: only "" is right
        pred = str(by_id[qid]["prediction_text"])
        exact_raw[qid] = max(exact_match_score(pred, g) for g in golds)
        f1_raw[qid] = max(f1_score(pred, g) for g in golds)
    no_answer_prob = {qid: float(by_id[qid]["no_answer_probability"]) for qid in by_id if qid in has_answer}

    def thresholded(raw: dict[str, float]) -> dict[str, float]:
        # above the threshold the question counts as answered "no answer": right exactly when it has none
        return {qid: (float(not has_answer[qid]) if no_answer_prob[qid] > no_answer_threshold else raw[qid])
                for qid in raw}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    out: dict[str, float] = {}

    def add(prefix: str, qids: list[str]) -> None:
        n = len(qids)
        out[f"{prefix}exact"] = 100.0 * sum(exact[q] for q in qids) / n
        out[f"{prefix}f1"] = 100.0 * sum(f1[q] for q in qids) / n
        out[f"{prefix}total"] = n

    add("", list(exact))
    answerable = [q for q in exact if has_answer[q]]
    unanswerable = [q for q in exact if not has_answer[q]]
    if answerable:
        add("HasAns_", answerable)
    if unanswerable:
        add("NoAns_", unanswerable)
    for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
        best, threshold = _best_threshold(raw, by_id, no_answer_prob, has_answer)
        out[f"best_{name}"] = best
        out[f"best_{name}_thresh"] = threshold
    return out


def _best_threshold(raw: dict[str, float], by_id: dict[str, dict], no_answer_prob: dict[str, float],
                    has_answer: dict[str, bool]) -> tuple[float, float]:
    """The best score over all no-answer thresholds, and that threshold (as the official v2 script finds them).

    With a threshold below every probability, every question is answered "no answer": the score is the number
    of unanswerable questions. Raising the threshold past each question's probability, in increasing order,
    switches that question to its prediction: an answerable one gains its score, an unanswerable one loses its
    point if the prediction is not empty."""
    score = best = float(sum(1 for q in has_answer if not has_answer[q]))
    best_threshold = 0.0
    for qid in sorted(no_answer_prob, key=lambda q: no_answer_prob[q]):
        if qid not in raw:
            continue
        if has_answer[qid]:
            score += raw[qid]
        elif by_id[qid]["prediction_text"]:
            score -= 1
        if score > best:
            best, best_threshold = score, no_answer_prob[qid]
    return 100.0 * best / len(raw), best_threshold
