"""trainwright.metrics: real values, checked against scikit-learn / scipy / numpy and hand computations."""

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from trainwright import metrics
from trainwright.errors import DataError


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def binary(rng):
    refs = rng.integers(0, 2, size=200)
    preds = np.where(rng.random(200) < 0.7, refs, 1 - refs)
    return preds, refs


@pytest.fixture(scope="module")
def multiclass(rng):
    refs = rng.integers(0, 4, size=300)
    preds = np.where(rng.random(300) < 0.6, refs, rng.integers(0, 4, size=300))
    return preds, refs


@pytest.fixture(scope="module")
def regression(rng):
    refs = rng.normal(size=150)
    preds = refs + rng.normal(scale=0.5, size=150)
    return preds, refs


# ---------------------------------------------------------------------------------------------------
# import cost
# ---------------------------------------------------------------------------------------------------


def test_import_is_lazy():
    code = (
        "import sys\n"
        "heavy = ('sklearn', 'scipy', 'torch', 'transformers', 'seqeval', 'sacrebleu', 'rouge_score')\n"
        "import trainwright\n"
        "before = {m for m in heavy if m in sys.modules}\n"
        "import trainwright.metrics\n"
        "new = sorted(m for m in heavy if m in sys.modules and m not in before)\n"
        "print('NEW', new)\n"
        "print('SKLEARN', 'sklearn' in sys.modules)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "NEW []" in out.stdout, out.stdout
    assert "SKLEARN False" in out.stdout, out.stdout


# ---------------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------------


def test_accuracy_hand_checked():
    res = metrics.load("accuracy").compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    assert res == {"accuracy": 0.75}
    assert type(res["accuracy"]) is float


def test_accuracy_normalize_and_weights(binary):
    preds, refs = binary
    acc = metrics.load("accuracy")
    assert acc.compute(predictions=preds, references=refs, normalize=False)["accuracy"] == float(
        (preds == refs).sum()
    )
    w = np.linspace(0.1, 2.0, len(refs))
    got = acc.compute(predictions=preds, references=refs, sample_weight=w)["accuracy"]
    assert got == pytest.approx(float(np.sum(w * (preds == refs)) / np.sum(w)))


@pytest.mark.parametrize("name", ["f1", "precision", "recall"])
def test_prf_binary_matches_sklearn(name, binary):
    preds, refs = binary
    fn = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[name]
    res = metrics.load(name).compute(predictions=preds, references=refs)
    assert set(res) == {name}
    assert type(res[name]) is float
    assert res[name] == pytest.approx(fn(refs, preds))
    res0 = metrics.load(name).compute(predictions=preds, references=refs, pos_label=0)
    assert res0[name] == pytest.approx(fn(refs, preds, pos_label=0))


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("name", ["f1", "precision", "recall"])
def test_prf_multiclass_matches_sklearn(name, average, multiclass):
    preds, refs = multiclass
    fn = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[name]
    got = metrics.load(name).compute(predictions=preds, references=refs, average=average)[name]
    assert got == pytest.approx(fn(refs, preds, average=average))


def test_prf_average_none_returns_per_class_list(multiclass):
    preds, refs = multiclass
    got = metrics.load("f1").compute(predictions=preds, references=refs, average=None)["f1"]
    assert isinstance(got, list) and len(got) == 4
    np.testing.assert_allclose(got, skm.f1_score(refs, preds, average=None))


def test_precision_zero_division():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = metrics.load("precision").compute(predictions=[0, 0, 0], references=[1, 0, 1], zero_division=0)
    assert res == {"precision": 0.0}


def test_binary_default_on_multiclass_gives_clear_error(multiclass):
    preds, refs = multiclass
    with pytest.raises(ValueError, match='average="macro"'):
        metrics.load("f1").compute(predictions=preds, references=refs)


def test_logits_are_refused_with_argmax_hint():
    with pytest.raises(DataError, match="argmax"):
        metrics.load("accuracy").compute(predictions=[[0.2, 0.8], [0.9, 0.1]], references=[1, 0])


def test_length_mismatch_is_clear():
    with pytest.raises(DataError, match="4 examples but `references` has 3"):
        metrics.load("accuracy").compute(predictions=[0, 1, 1, 0], references=[0, 1, 0])


def test_matthews_matches_sklearn(multiclass):
    preds, refs = multiclass
    res = metrics.load("matthews_correlation").compute(predictions=preds, references=refs)
    assert res["matthews_correlation"] == pytest.approx(skm.matthews_corrcoef(refs, preds))
    assert type(res["matthews_correlation"]) is float


def test_matthews_multilabel(rng):
    refs = rng.integers(0, 2, size=(50, 3))
    preds = np.where(rng.random((50, 3)) < 0.8, refs, 1 - refs)
    m = metrics.load("matthews_correlation", "multilabel")
    per_label = m.compute(predictions=preds, references=refs)["matthews_correlation"]
    expected = [skm.matthews_corrcoef(refs[:, i], preds[:, i]) for i in range(3)]
    np.testing.assert_allclose(per_label, expected)
    macro = m.compute(predictions=preds, references=refs, average="macro")["matthews_correlation"]
    assert macro == pytest.approx(np.mean(expected))


# ---------------------------------------------------------------------------------------------------
# regression / correlation
# ---------------------------------------------------------------------------------------------------


def test_pearsonr_and_pvalue(regression):
    preds, refs = regression
    r, p = stats.pearsonr(refs, preds)
    assert metrics.load("pearsonr").compute(predictions=preds, references=refs) == {"pearsonr": pytest.approx(r)}
    res = metrics.load("pearsonr").compute(predictions=preds, references=refs, return_pvalue=True)
    assert set(res) == {"pearsonr", "p-value"}
    assert res["p-value"] == pytest.approx(p)
    assert res["pearsonr"] == pytest.approx(np.corrcoef(preds, refs)[0, 1])


def test_spearmanr_and_pvalue(regression):
    preds, refs = regression
    rho, p = stats.spearmanr(refs, preds)
    res = metrics.load("spearmanr").compute(predictions=preds, references=refs)
    assert res == {"spearmanr": pytest.approx(rho)}
    res = metrics.load("spearmanr").compute(predictions=preds, references=refs, return_pvalue=True)
    assert set(res) == {"spearmanr", "spearmanr_pvalue"}
    assert res["spearmanr_pvalue"] == pytest.approx(p)
    # monotone but non-linear: rank correlation is exactly 1
    x = np.arange(1.0, 20.0)
    assert metrics.load("spearmanr").compute(predictions=x**3, references=x)["spearmanr"] == pytest.approx(1.0)


def test_mse_rmse_mae(regression):
    preds, refs = regression
    mse = float(np.mean((preds - refs) ** 2))
    assert metrics.load("mse").compute(predictions=preds, references=refs)["mse"] == pytest.approx(mse)
    rmse = metrics.load("mse").compute(predictions=preds, references=refs, squared=False)
    assert set(rmse) == {"mse"}
    assert rmse["mse"] == pytest.approx(math.sqrt(mse))
    mae = metrics.load("mae").compute(predictions=preds, references=refs)
    assert mae == {"mae": pytest.approx(float(np.mean(np.abs(preds - refs))))}
    assert metrics.load("mse").compute(predictions=[1.0, 2.0], references=[0.0, 4.0]) == {"mse": 2.5}


def test_mse_raw_values(rng):
    refs = rng.normal(size=(20, 2))
    preds = refs + 1.0
    raw = metrics.load("mse", "multilist").compute(predictions=preds, references=refs, multioutput="raw_values")
    np.testing.assert_allclose(raw["mse"], [1.0, 1.0])


# ---------------------------------------------------------------------------------------------------
# glue
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config", ["sst2", "mnli", "mnli_mismatched", "mnli_matched", "qnli", "rte", "wnli", "hans"]
)
def test_glue_accuracy_configs(config, binary):
    preds, refs = binary
    res = metrics.load("glue", config).compute(predictions=preds, references=refs)
    assert res == {"accuracy": pytest.approx(skm.accuracy_score(refs, preds))}
    assert type(res["accuracy"]) is float


@pytest.mark.parametrize("config", ["mrpc", "qqp"])
def test_glue_accuracy_f1_configs(config, binary):
    preds, refs = binary
    res = metrics.load("glue", config).compute(predictions=preds, references=refs)
    assert set(res) == {"accuracy", "f1"}
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(refs, preds))
    assert res["f1"] == pytest.approx(skm.f1_score(refs, preds))
    assert all(type(v) is float for v in res.values())


def test_glue_stsb(regression):
    preds, refs = regression
    res = metrics.load("glue", "stsb").compute(predictions=preds, references=refs)
    assert set(res) == {"pearson", "spearmanr"}
    assert res["pearson"] == pytest.approx(np.corrcoef(preds, refs)[0, 1])
    assert res["spearmanr"] == pytest.approx(stats.spearmanr(preds, refs)[0])
    assert all(type(v) is float for v in res.values())


def test_glue_cola(binary):
    preds, refs = binary
    res = metrics.load("glue", "cola").compute(predictions=preds, references=refs)
    assert res == {"matthews_correlation": pytest.approx(skm.matthews_corrcoef(refs, preds))}


def test_glue_bad_or_missing_config():
    with pytest.raises(ValueError) as err:
        metrics.load("glue", "mrcp")
    assert "mrpc" in str(err.value) and "stsb" in str(err.value) and "cola" in str(err.value)
    with pytest.raises(ValueError, match="mrpc"):
        metrics.load("glue")
    assert metrics.load("glue", config_name="MRPC").config_name == "mrpc"


# ---------------------------------------------------------------------------------------------------
# input types
# ---------------------------------------------------------------------------------------------------


def test_torch_tensors_and_numpy_inputs():
    torch = pytest.importorskip("torch")
    acc = metrics.load("accuracy")
    assert acc.compute(predictions=torch.tensor([0, 1, 1, 0]), references=torch.tensor([0, 1, 0, 0])) == {
        "accuracy": 0.75
    }
    assert acc.compute(predictions=np.array([0, 1, 1, 0]), references=(0, 1, 0, 0)) == {"accuracy": 0.75}
    # float predictions with grad, in bfloat16 (no numpy dtype)
    preds = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.bfloat16, requires_grad=True)
    res = metrics.load("mse").compute(predictions=preds, references=torch.tensor([0, 1, 2, 5]))
    assert res == {"mse": 1.0}
    # (N, 1) regression head output
    res = metrics.load("glue", "stsb").compute(
        predictions=torch.tensor([[0.1], [0.9], [2.2], [2.9]]), references=[0.0, 1.0, 2.0, 3.0]
    )
    assert res["pearson"] == pytest.approx(np.corrcoef([0.1, 0.9, 2.2, 2.9], [0, 1, 2, 3])[0, 1], rel=1e-6)


def test_add_batch_then_compute(multiclass):
    preds, refs = multiclass
    m = metrics.load("f1")
    for i in range(0, len(preds), 64):
        m.add_batch(predictions=preds[i : i + 64], references=refs[i : i + 64])
    got = m.compute(average="macro")["f1"]
    assert got == pytest.approx(skm.f1_score(refs, preds, average="macro"))
    m.add(prediction=1, reference=1)
    m.add(prediction=0, reference=1)
    assert metrics.load("accuracy").compute(predictions=[1, 0], references=[1, 1]) == {"accuracy": 0.5}
    assert m.compute(average="micro") == {"f1": 0.5}


def test_unknown_kwarg_is_clear():
    with pytest.raises(TypeError, match="normalize"):
        metrics.load("accuracy").compute(predictions=[0], references=[0], averge="macro")


# ---------------------------------------------------------------------------------------------------
# loading, listing, combining
# ---------------------------------------------------------------------------------------------------


def test_list_metrics():
    names = metrics.list_metrics()
    assert names == sorted(names)
    for n in ["accuracy", "f1", "precision", "recall", "matthews_correlation", "pearsonr", "spearmanr",
              "mse", "mae", "glue", "seqeval", "bleu", "sacrebleu", "rouge", "perplexity", "squad", "squad_v2"]:
        assert n in names


def test_unknown_metric_suggests_nearest():
    with pytest.raises(ValueError) as err:
        metrics.load("acuracy")
    msg = str(err.value)
    assert 'Did you mean "accuracy"' in msg
    assert "matthews_correlation" in msg and "seqeval" in msg
    with pytest.raises(ValueError, match="Available metrics"):
        metrics.load("totally_not_a_metric_xyz")


def test_evaluate_style_names():
    assert metrics.load("evaluate-metric/accuracy").name == "accuracy"
    assert metrics.load("Matthews-Correlation").name == "matthews_correlation"


def test_combine(binary):
    preds, refs = binary
    clf = metrics.combine("accuracy", "f1", "precision", "recall")
    res = clf.compute(predictions=preds, references=refs)
    assert res == {
        "accuracy": pytest.approx(skm.accuracy_score(refs, preds)),
        "f1": pytest.approx(skm.f1_score(refs, preds)),
        "precision": pytest.approx(skm.precision_score(refs, preds)),
        "recall": pytest.approx(skm.recall_score(refs, preds)),
    }
    # evaluate.combine takes one list too
    assert metrics.combine(["accuracy", "f1"]).compute(predictions=[0, 1], references=[0, 1]) == {
        "accuracy": 1.0,
        "f1": 1.0,
    }


def test_combine_routes_kwargs_and_prefixes_duplicates(multiclass, binary):
    preds, refs = multiclass
    res = metrics.combine("accuracy", "f1").compute(predictions=preds, references=refs, average="macro")
    assert res["f1"] == pytest.approx(skm.f1_score(refs, preds, average="macro"))
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(refs, preds))
    bp, br = binary
    dup = metrics.combine(("glue", "mrpc"), "accuracy").compute(predictions=bp, references=br)
    assert set(dup) == {"glue_accuracy", "f1", "accuracy_accuracy"}  # only shared keys get a prefix
    forced = metrics.combine("accuracy", force_prefix=True).compute(predictions=[1], references=[1])
    assert forced == {"accuracy_accuracy": 1.0}


# ---------------------------------------------------------------------------------------------------
# text metrics
# ---------------------------------------------------------------------------------------------------


def test_seqeval_two_of_three_entities():
    pytest.importorskip("seqeval")
    refs = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "O"]]
    preds = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "O"]]  # ORG span truncated -> wrong
    res = metrics.load("seqeval").compute(predictions=preds, references=refs)
    assert res["overall_precision"] == pytest.approx(2 / 3)
    assert res["overall_recall"] == pytest.approx(2 / 3)
    assert res["overall_f1"] == pytest.approx(2 / 3)
    assert res["overall_accuracy"] == pytest.approx(7 / 8)
    assert res["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert res["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert res["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert set(res) == {"PER", "LOC", "ORG", "overall_precision", "overall_recall", "overall_f1",
                        "overall_accuracy"}
    assert type(res["overall_f1"]) is float and type(res["PER"]["number"]) is int


def test_seqeval_unequal_precision_recall():
    pytest.importorskip("seqeval")
    # 3 gold entities, 2 predicted, both correct: precision 1, recall 2/3, f1 0.8
    refs = [["B-PER", "O", "B-LOC", "B-MISC"]]
    preds = [["B-PER", "O", "B-LOC", "O"]]
    res = metrics.load("seqeval").compute(predictions=preds, references=refs, zero_division=0)
    assert res["overall_precision"] == pytest.approx(1.0)
    assert res["overall_recall"] == pytest.approx(2 / 3)
    assert res["overall_f1"] == pytest.approx(0.8)


def test_seqeval_length_mismatch():
    pytest.importorskip("seqeval")
    with pytest.raises(DataError, match="Sentence 0"):
        metrics.load("seqeval").compute(predictions=[["O", "O"]], references=[["O"]])


def test_sacrebleu_identical_is_100():
    sacrebleu = pytest.importorskip("sacrebleu")
    preds = ["the cat sat on the mat", "hello there , general kenobi"]
    res = metrics.load("sacrebleu").compute(predictions=preds, references=preds)
    assert set(res) == {"score", "counts", "totals", "precisions", "bp", "sys_len", "ref_len"}
    assert res["score"] == pytest.approx(100.0)
    assert res["bp"] == 1.0 and res["sys_len"] == res["ref_len"]
    # partial match agrees with sacrebleu itself; list-of-lists references too
    hyp = ["the cat is on the mat"]
    refs = [["the cat sat on the mat", "there is a cat on the mat"]]
    got = metrics.load("sacrebleu").compute(predictions=hyp, references=refs)["score"]
    assert got == pytest.approx(sacrebleu.corpus_bleu(hyp, [[refs[0][0]], [refs[0][1]]]).score)
    assert 0 < got < 100


def test_bleu_identical_and_hand_checked():
    pytest.importorskip("sacrebleu")
    preds = ["the cat sat on the mat"]
    res = metrics.load("bleu").compute(predictions=preds, references=preds)
    assert set(res) == {"bleu", "precisions", "brevity_penalty", "length_ratio", "translation_length",
                        "reference_length"}
    assert res["bleu"] == pytest.approx(1.0)
    assert res["translation_length"] == res["reference_length"] == 6
    # hypothesis 'the cat sat on the' (5 tokens) vs 6-token reference:
    # all n-grams match, so precisions are 1 and BLEU is the brevity penalty exp(1 - 6/5)
    res = metrics.load("bleu").compute(predictions=["the cat sat on the"], references=[["the cat sat on the mat"]])
    assert res["precisions"] == [1.0, 1.0, 1.0, 1.0]
    assert res["bleu"] == pytest.approx(math.exp(1 - 6 / 5))
    assert res["length_ratio"] == pytest.approx(5 / 6)
    # no 4-gram match -> 0 without smoothing, > 0 with
    res = metrics.load("bleu").compute(predictions=["a b c d"], references=["a b x d"])
    assert res["bleu"] == 0.0
    assert metrics.load("bleu").compute(predictions=["a b c d"], references=["a b x d"], smooth=True)["bleu"] > 0


def test_rouge_identical_and_partial():
    pytest.importorskip("rouge_score")
    preds = ["the cat sat on the mat", "a quick brown fox"]
    res = metrics.load("rouge").compute(predictions=preds, references=preds)
    assert res == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "rougeLsum": 1.0}
    # 'the cat' vs 'the dog': unigram P = R = 1/2 -> F 0.5; no bigram overlap
    res = metrics.load("rouge").compute(predictions=["the cat"], references=["the dog"])
    assert res["rouge1"] == pytest.approx(0.5)
    assert res["rouge2"] == pytest.approx(0.0)
    # mean over examples, and per-example lists without the aggregator
    res = metrics.load("rouge").compute(
        predictions=["the cat", "a b"], references=["the dog", "a b"], rouge_types=["rouge1"]
    )
    assert res == {"rouge1": pytest.approx(0.75)}
    res = metrics.load("rouge").compute(
        predictions=["the cat", "a b"], references=["the dog", "a b"], use_aggregator=False
    )
    assert res["rouge1"] == [pytest.approx(0.5), pytest.approx(1.0)]


def test_text_metric_rejects_token_ids():
    pytest.importorskip("sacrebleu")
    with pytest.raises(DataError, match="batch_decode"):
        metrics.load("sacrebleu").compute(predictions=[[1, 2, 3]], references=["a b c"])


# ---------------------------------------------------------------------------------------------------
# perplexity
# ---------------------------------------------------------------------------------------------------


def test_perplexity():
    assert metrics.perplexity_from_loss(math.log(10)) == pytest.approx(10.0)
    assert metrics.perplexity_from_loss(0.0) == 1.0
    assert metrics.perplexity_from_loss(1e6) == float("inf")
    assert math.isnan(metrics.perplexity_from_loss(float("nan")))
    ppl = metrics.load("perplexity")
    assert ppl.compute(eval_loss=math.log(10)) == {"perplexity": pytest.approx(10.0)}
    assert ppl.compute(losses=[math.log(2), math.log(8)]) == {"perplexity": pytest.approx(4.0)}
    weighted = ppl.compute(losses=[1.0, 2.0], weights=[3, 1])
    assert weighted["perplexity"] == pytest.approx(math.exp(1.25))
    with pytest.raises(ValueError, match="eval_loss"):
        ppl.compute()
    with pytest.raises(ValueError, match="eval_loss"):
        ppl.compute(model_id="gpt2")


def test_perplexity_tensor_loss():
    torch = pytest.importorskip("torch")
    assert metrics.perplexity_from_loss(torch.tensor(math.log(10))) == pytest.approx(10.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0 (the official scripts' rules; values worked out by hand)
# ---------------------------------------------------------------------------------------------------


def _ref(qid, *texts):
    return {"id": qid, "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}


def test_squad_normalisation_rules():
    from trainwright.metrics.squad import f1_score, normalize_answer
    assert normalize_answer("  The  Denver Broncos! ") == "denver broncos"
    assert normalize_answer("an apple, a pear and the plum.") == "apple pear and plum"
    assert normalize_answer("theatre anthem") == "theatre anthem"  # articles only as whole words
    assert normalize_answer("U.S.-based") == "usbased"
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    assert f1_score("", "") == 1.0 and f1_score("", "cat") == 0.0
    assert f1_score("the", "a", empty_agrees=False) == 0.0  # v1 script: no common token -> 0


def test_squad_v1_known_values():
    squad = metrics.load("squad")
    preds = [{"id": "q1", "prediction_text": "The Denver Broncos!"},   # exact after normalisation
             {"id": "q2", "prediction_text": "blue cat"},              # best gold "cat": F1 2/3, no exact
             {"id": "q3", "prediction_text": "nothing in common"}]     # 0 / 0
    refs = [_ref("q1", "Denver Broncos"), _ref("q2", "a red cat", "cat"), _ref("q3", "1958")]
    out = squad.compute(predictions=preds, references=refs)
    assert list(out) == ["exact_match", "f1"]
    assert out["exact_match"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    # the order of predictions does not matter (matched by id); batches accumulate
    squad.add_batch(predictions=preds[::-1][:2], references=refs[:2])
    squad.add_batch(predictions=preds[:1], references=refs[2:])
    assert squad.compute() == pytest.approx(out)
    with pytest.warns(UserWarning, match="1 of 3 questions have no prediction"):
        missing = squad.compute(predictions=preds[:2], references=refs)
    assert missing["exact_match"] == pytest.approx(100 / 3)  # the unanswered question scores 0 (counted)
    with pytest.raises(DataError, match="'prediction_text'"):
        squad.compute(predictions=[{"id": "q1", "text": "x"}], references=refs[:1])


def test_squad_v2_known_values():
    squad_v2 = metrics.load("squad_v2")
    preds = [{"id": "q1", "prediction_text": "Denver", "no_answer_probability": 0.1},   # F1 2/3 (p 1, r 1/2)
             {"id": "q2", "prediction_text": "", "no_answer_probability": 0.9},         # right: no answer
             {"id": "q3", "prediction_text": "x", "no_answer_probability": 0.5}]        # wrong: has none
    refs = [_ref("q1", "Denver Broncos"), _ref("q2"), _ref("q3")]
    out = squad_v2.compute(predictions=preds, references=refs)
    assert list(out) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact",
                         "NoAns_f1", "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    assert out["total"] == 3 and out["HasAns_total"] == 1 and out["NoAns_total"] == 2
    assert out["exact"] == pytest.approx(100 / 3) and out["f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    assert out["HasAns_exact"] == 0 and out["HasAns_f1"] == pytest.approx(200 / 3)
    assert out["NoAns_exact"] == out["NoAns_f1"] == 50
    # thresholds: all "no answer" scores 2 of 3; answering q1 (p 0.1) adds 0 exact / 2/3 F1; q3 (0.5) loses 1
    assert out["best_exact"] == pytest.approx(200 / 3) and out["best_exact_thresh"] == 0.0
    assert out["best_f1"] == pytest.approx(100 * (2 + 2 / 3) / 3) and out["best_f1_thresh"] == 0.1
    # a threshold below q3's probability turns its wrong answer into a right "no answer"
    low = squad_v2.compute(predictions=preds, references=refs, no_answer_threshold=0.4)
    assert low["exact"] == pytest.approx(200 / 3) and low["NoAns_exact"] == 100
    only_answerable = squad_v2.compute(predictions=preds[:1], references=refs[:1])
    assert "NoAns_total" not in only_answerable and only_answerable["HasAns_total"] == 1
    with pytest.raises(DataError, match="no prediction"):
        squad_v2.compute(predictions=preds[:2], references=refs)
    with pytest.raises(DataError, match="no_answer_probability"):
        squad_v2.compute(predictions=[{"id": "q1", "prediction_text": "x"}], references=refs[:1])
