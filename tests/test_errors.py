"""Every entry of docs/errors.md: the input, the exception type, the key phrases of the message, and that it is
raised before the first optimizer step (state.global_step == 0 and no step callback ever ran).

Each case is registered in CASES under its catalog id; test_catalog_and_tests_agree checks that the ids in
docs/errors.md and the ids tested here are the same set.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest
import torch

from trainwright import (
    CheckpointError,
    ConfigError,
    DataCollatorForTokenClassification,
    DataError,
    ModelError,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
CASES: dict = {}


def case(cid):
    def register(fn):
        CASES[cid] = fn
        return fn
    return register


class StepSpy(TrainerCallback):
    """Fails the test if an optimizer step ever begins."""

    def __init__(self):
        self.steps = 0

    def on_step_begin(self, args, state, control, **kw):
        self.steps += 1
        return control


class Ctx:
    """What a case needs: fixtures, a tmp dir, and helpers to build small inputs."""

    def __init__(self, tmp_path, tokenizer, make_tiny_model, monkeypatch):
        self.tmp = tmp_path
        self.tok = tokenizer
        self.make_model = make_tiny_model
        self.monkeypatch = monkeypatch
        self.spy = StepSpy()
        self.trainer = None

    def args(self, **kw):
        base = dict(output_dir=str(self.tmp / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                    max_steps=2, save_strategy="no", report_to="none", disable_tqdm=True, write_report=False,
                    logging_steps=1, learning_rate=1e-3)
        base.update(kw)
        return TrainingArguments(**base)

    def texts(self, n=8):
        words = ["good movie", "bad film", "a fine and pleasant story", "terrible", "ok", "great acting here",
                 "boring plot", "loved it"]
        return [words[i % len(words)] for i in range(n)]

    def data(self, labels=None, n=8, column="label", **extra):
        from datasets import Dataset
        enc = self.tok(self.texts(n), truncation=True, max_length=32)
        cols = dict(enc)
        if labels is not None:
            cols[column] = labels
        cols.update(extra)
        return Dataset.from_dict(cols)

    def build(self, model=None, train=None, eval_dataset=None, args=None, **kw):
        self.trainer = Trainer(model if model is not None else self.make_model(),
                               args if args is not None else self.args(), train_dataset=train,
                               eval_dataset=eval_dataset, processing_class=kw.pop("processing_class", self.tok),
                               callbacks=[self.spy], **kw)
        return self.trainer

    def train_raises(self, exc, *phrases, **train_kw):
        with pytest.raises(exc) as info:
            self.trainer.train(**train_kw)
        self.check(info, *phrases)
        assert self.trainer.state.global_step == 0
        return info.value

    def check(self, info, *phrases):
        message = str(info.value)
        for phrase in phrases:
            assert phrase in message, f"{phrase!r} not in: {message}"
        assert self.spy.steps == 0, "an optimizer step began before the error"


# ============================================================================================ arguments / Trainer()
@case("E01")
def _grad_accum_zero(c):
    with pytest.raises(ConfigError) as info:
        c.args(gradient_accumulation_steps=0)
    c.check(info, "gradient_accumulation_steps=0", "integer >= 1")


@case("E02")
def _eval_strategy_without_eval_dataset(c):
    with pytest.raises(ConfigError) as info:
        c.build(train=c.data([0, 1] * 4), args=c.args(eval_strategy="epoch"))
    c.check(info, "eval_strategy='epoch' needs an eval_dataset", "eval_dataset=", "eval_strategy='no'")


@case("E03")
def _save_best_without_metric(c):
    with pytest.raises(ConfigError) as info:
        c.args(save_strategy="best")
    c.check(info, "save_strategy='best' needs metric_for_best_model")


@case("E04")
def _iterable_without_max_steps(c):
    iterable = c.data([0, 1] * 4).to_iterable_dataset()
    with pytest.raises(ConfigError) as info:
        c.build(train=iterable, args=c.args(max_steps=-1))
    c.check(info, "train_dataset has no length", "max_steps=")


@case("E05")
def _empty_train_dataset(c):
    with pytest.raises(DataError) as info:
        c.build(train=c.data([0, 1] * 4).select([]))
    c.check(info, "train_dataset is empty (0 rows)")

    class Empty(torch.utils.data.Dataset):  # a map-style dataset without columns: caught in train()
        def __len__(self):
            return 0

        def __getitem__(self, i):
            raise IndexError(i)

    c.build(train=Empty())
    c.train_raises(DataError, "train_dataset is empty (0 rows)")


@case("E06")
def _empty_eval_dataset(c):
    with pytest.raises(DataError) as info:
        c.build(train=c.data([0, 1] * 4), eval_dataset=c.data([0, 1] * 4).select([]),
                args=c.args(eval_strategy="steps", eval_steps=1))
    c.check(info, "is empty (0 rows)")


@case("E07")
def _empty_iterable_train_dataset(c):
    class NoRows(torch.utils.data.IterableDataset):  # e.g. a stream whose filter dropped everything
        def __iter__(self):
            return iter(())

    c.build(train=NoRows(), args=c.args(max_steps=2))
    c.train_raises(DataError, "train_dataset yielded no rows")


@case("E08")
def _batch_larger_than_dataset_with_drop_last(c):
    c.build(train=c.data([0, 1] * 2, n=4), args=c.args(per_device_train_batch_size=8, dataloader_drop_last=True))
    c.train_raises(DataError, "train_dataset has 4 rows, fewer than one batch of 8", "dataloader_drop_last=False")


@case("E09")
def _fp16_unsupported(c):
    from trainwright import precision
    c.monkeypatch.setattr(precision, "fp16_supported", lambda device: False)
    with pytest.raises(ConfigError) as info:
        c.build(train=c.data([0, 1] * 4), args=c.args(fp16=True))
    c.check(info, "fp16=True but the CPU has no float16 support", "bf16=True")


@case("E10")
def _bf16_unsupported(c):
    from trainwright import precision
    c.monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    with pytest.raises(ConfigError) as info:
        c.build(train=c.data([0, 1] * 4), args=c.args(bf16=True))
    c.check(info, "bf16=True but the CPU has no bfloat16 support", "fp16=True")


@case("E11")
def _output_dir_is_a_file(c):
    path = c.tmp / "a_file"
    path.write_text("x")
    c.build(train=c.data([0, 1] * 4), args=c.args(output_dir=str(path)))
    c.train_raises(ConfigError, f"output_dir={str(path)!r} is a file", "choose another output_dir")


@case("E12")
def _output_dir_cannot_be_created(c):
    path = c.tmp / "a_file"
    path.write_text("x")
    c.build(train=c.data([0, 1] * 4), args=c.args(output_dir=str(path / "sub")))
    c.train_raises(ConfigError, "cannot be created", "choose a writable directory")


@case("E13")
def _output_dir_not_writable(c):
    out = c.tmp / "readonly"
    out.mkdir()
    real_access = os.access
    # tests often run as root, for whom chmod does not remove write access: simulate a read-only directory
    c.monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(out) and mode == os.W_OK
                          else real_access(p, mode, **kw))
    c.build(train=c.data([0, 1] * 4), args=c.args(output_dir=str(out)))
    c.train_raises(ConfigError, "is not writable", "choose a directory you can write to")


@case("E14")
def _resume_without_checkpoint(c):
    c.build(train=c.data([0, 1] * 4))
    c.train_raises(CheckpointError, "resume_from_checkpoint=True but", "holds no complete checkpoint",
                   resume_from_checkpoint=True)


@case("E15")
def _resume_from_incomplete_checkpoint(c):
    broken = c.tmp / "out" / "checkpoint-4"
    broken.mkdir(parents=True)
    (broken / "model.safetensors").write_bytes(b"half a file")
    c.build(train=c.data([0, 1] * 4))
    with pytest.warns(UserWarning, match="incomplete"):
        c.train_raises(CheckpointError, "holds no complete checkpoint", resume_from_checkpoint=True)
    c.build(train=c.data([0, 1] * 4))
    c.train_raises(CheckpointError, "is incomplete: no manifest", resume_from_checkpoint=str(broken))


@case("E16")
def _save_best_without_evaluation(c):
    c.build(train=c.data([0, 1] * 4), eval_dataset=c.data([0, 1] * 4),
            args=c.args(save_strategy="best", metric_for_best_model="loss"))
    c.train_raises(ConfigError, "save_strategy='best' saves a checkpoint when an evaluation finds a new best 'loss'",
                   "eval_strategy='no', so nothing would ever be saved", "eval_strategy='steps'")


@case("E17")
def _dict_of_columns(c):
    ids = c.tok(c.texts(), truncation=True, max_length=32)["input_ids"]
    with pytest.raises(DataError) as info:
        c.build(train={"input_ids": ids, "labels": [0, 1] * 4})
    c.check(info, "train_dataset is a dict of columns ('input_ids', 'labels'; 8 values each), not a dataset of rows",
            "datasets.Dataset.from_dict")
    with pytest.raises(DataError) as info:
        c.build(train=c.data([0, 1] * 4), eval_dataset={"input_ids": ids, "labels": [0, 1] * 4})
    c.check(info, "eval_dataset is a dict of columns")


@case("E18")
def _bitsandbytes_base_without_cuda(c):
    c.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = c.make_model()
    model.is_loaded_in_4bit = True  # what transformers sets on a 4-bit bitsandbytes model (no bitsandbytes here)
    model.config.quantization_config = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    with pytest.raises(ModelError) as info:
        c.build(model=model, train=c.data([0, 1] * 4))
    c.check(info, "The model is quantized to 4-bit with bitsandbytes", "needs a CUDA GPU and the bitsandbytes "
            "package", "this machine has no CUDA GPU", "without quantization_config")


@case("E19")
def _quantized_base_without_adapter(c):
    model = c.make_model()
    model.config.quantization_config = {"quant_method": "gptq", "bits": 4}
    with pytest.raises(ModelError) as info:
        c.build(model=model, train=c.data([0, 1] * 4))
    c.check(info, "The model is quantized (gptq) and has no trainable adapter", "peft.get_peft_model")


# ============================================================================================ pre-flight: labels
@case("P01")
def _label_above_num_labels(c):
    c.build(train=c.data([0, 1, 2, 5, 0, 1, 2, 1]))
    c.train_raises(ModelError, "train_dataset column 'labels' has the label 5 (row 3)", "num_labels=2",
                   "valid labels 0..1", "num_labels=6")


@case("P02")
def _negative_label(c):
    c.build(train=c.data([0, 1, -1, 1, 0, 1, 0, 1]))
    c.train_raises(DataError, "has the label -1 (row 2)", "[0, 2)", "unlabeled split", "filter")


@case("P03")
def _string_labels(c):
    c.build(train=c.data(["positive", "negative"] * 4))
    c.train_raises(DataError, "column 'labels' holds strings ('positive', 'negative', ...)", "no label mapping",
                   "label2id", "class_encode_column")


@case("P04")
def _string_labels_list_dataset(c):
    rows = [{"input_ids": ids, "attention_mask": [1] * len(ids), "label": lab}
            for ids, lab in zip(c.tok(c.texts())["input_ids"], ["pos", "neg"] * 4)]
    c.build(train=rows)
    c.train_raises(DataError, "column 'label' holds strings ('pos', 'neg', ...)", "label2id")


@case("P05")
def _float_labels_with_classifier(c):
    c.build(train=c.data([0.5, 1.0, 0.25, 0.0] * 2))
    c.train_raises(ModelError, "holds one float per row (regression targets)", "num_labels=2",
                   "num_labels=1", "problem_type='regression'", "cast the labels to integers")


@case("P06")
def _int_labels_with_regression_head(c):
    c.build(model=c.make_model(num_labels=1), train=c.data([0, 1, 2, 1] * 2))
    c.train_raises(ModelError, "holds integer class ids (up to 2)", "num_labels=1", "regression",
                   "num_labels=3", "problem_type='regression'")


@case("P07")
def _missing_labels(c):
    c.build(train=c.data(None))
    c.train_raises(DataError, "train_dataset has no 'labels' column", "its columns: input_ids, token_type_ids, "
                   "attention_mask", "cannot compute a loss", "'label' or 'labels'")


@case("P08")
def _missing_labels_wrong_name(c):
    c.build(train=c.data([0, 1] * 4, column="sentiment"))
    c.train_raises(DataError, "has no 'labels' column", "sentiment", "label_names")


@case("P09")
def _null_labels(c):
    c.build(train=c.data([0, 1, None, 1, 0, 1, 0, 1]))
    c.train_raises(DataError, "has 1 missing (None) labels", "filter")


@case("P10")
def _multilabel_wrong_width(c):
    c.build(model=c.make_model(num_labels=3), train=c.data([[1.0, 0.0]] * 8))
    c.train_raises(DataError, "holds lists of 2 values per row (multi-label targets)", "num_labels=3",
                   "exactly 3 values")


@case("P11")
def _multilabel_int(c):
    c.build(model=c.make_model(num_labels=2), train=c.data([[1, 0], [0, 1]] * 4))
    c.train_raises(DataError, "multi-hot lists of integers", "needs floats",
                   "problem_type='multi_label_classification'")


@case("P12")
def _token_label_above_num_labels(c):
    from datasets import Dataset
    enc = c.tok(c.texts())
    tags = [[(j % 3) if j != 2 or i != 5 else 7 for j in range(len(ids))] for i, ids in enumerate(enc["input_ids"])]
    tags = [[-100] + t[1:] for t in tags]
    c.build(model=c.make_model(num_labels=3, head="token"), train=Dataset.from_dict({**enc, "labels": tags}),
            data_collator=DataCollatorForTokenClassification(c.tok))
    c.train_raises(ModelError, "has the label 7 (row 5)", "num_labels=3", "num_labels=8")


@case("P13")
def _label_out_of_range_list_dataset(c):
    rows = [{"input_ids": ids, "attention_mask": [1] * len(ids), "label": lab}
            for ids, lab in zip(c.tok(c.texts())["input_ids"], [0, 1, 3, 1, 0, 1, 0, 1])]
    c.build(train=rows)
    c.train_raises(ModelError, "column 'labels' has the label 3", "num_labels=2", "num_labels=4")


@case("P14")
def _eval_label_out_of_range(c):
    c.build(train=c.data([0, 1] * 4), eval_dataset=c.data([0, 1, 2, 1] * 2),
            args=c.args(eval_strategy="steps", eval_steps=1))
    c.train_raises(ModelError, "eval_dataset column 'labels' has the label 2", "num_labels=3")


# ============================================================================================ pre-flight: inputs
@case("P15")
def _sequence_too_long(c):
    from datasets import Dataset
    enc = c.tok([" ".join(["word"] * 300)] + c.texts(7), truncation=False)
    c.build(train=Dataset.from_dict({**enc, "label": [0, 1] * 4}))
    c.train_raises(DataError, "has a sequence of 302 tokens (row 0)", "position embeddings for only 128 positions",
                   "max_position_embeddings=128", "truncation=True, max_length=128")


@case("P16")
def _token_id_above_vocab(c):
    from transformers import BertConfig, BertForSequenceClassification
    small = BertForSequenceClassification(BertConfig(  # a model of another, smaller vocabulary
        vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128))
    c.build(model=small, train=c.data([0, 1] * 4))
    err = c.train_raises(ModelError, "column 'input_ids' has token id", "vocab_size=1000", "do not match",
                         "model.resize_token_embeddings(len(tokenizer))")
    assert int(re.search(r"token id (\d+)", str(err)).group(1)) >= 1000


@case("P17")
def _tokenizer_without_pad_token(c):
    import copy
    tok = copy.deepcopy(c.tok)
    tok.pad_token = None
    c.build(train=c.data([0, 1] * 4), processing_class=tok)
    c.train_raises(ConfigError, "processing_class (", "has no pad token", "DataCollatorWithPadding",
                   "tokenizer.pad_token = tokenizer.eos_token")


@case("P21")
def _none_label_in_a_list_dataset(c):
    ids = c.tok(c.texts())["input_ids"]
    rows = [{"input_ids": x, "attention_mask": [1] * len(x), "label": lab}
            for x, lab in zip(ids, [0, 1, 0, 1, 0, None, 0, 1])]  # row 5: not in the first batch of 4
    c.build(train=rows)
    c.train_raises(DataError, "train_dataset column 'label' has 1 missing (None) labels (first in row 5)",
                   "is not None", "or fill them in")

    class Rows(torch.utils.data.Dataset):  # any map-style dataset: the first batch's rows
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]
    rows[5]["label"], rows[2]["label"] = 1, None
    c.build(train=Rows(rows))
    c.train_raises(DataError, "column 'label' has 1 missing (None) labels (first in row 2)")


@case("P22")
def _collator_returns_a_list(c):
    c.build(train=c.data([0, 1] * 4), data_collator=lambda rows: [r["input_ids"] for r in rows])
    c.train_raises(DataError, "The data collator (<lambda>) returned a list for the train_dataset batches",
                   "model(**batch)", "dict of tensors", "override compute_loss")


@case("P23")
def _collator_returns_lists_not_tensors(c):
    def no_tensors(rows):
        return {"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows]}
    c.build(train=c.data([0, 1] * 4, column="labels"), data_collator=no_tensors)
    c.train_raises(DataError, "The data collator (no_tensors) returned train_dataset column 'input_ids' as a list, "
                   "not a torch.Tensor", "return_tensors='pt'")


@case("P24")
def _token_type_ids_out_of_range(c):
    enc = c.tok(c.texts(), truncation=True, max_length=32)
    types = [[2 if i == 3 else 0 for _ in x] for i, x in enumerate(enc["input_ids"])]
    c.build(train=c.data([0, 1] * 4, token_type_ids=types))
    c.train_raises(ModelError, "train_dataset column 'token_type_ids' has the segment id 2 (row 3)",
                   "type_vocab_size=2 (segment ids 0..1)", "ds.remove_columns('token_type_ids')")
    rows = [{"input_ids": x, "token_type_ids": t, "label": i % 2}
            for i, (x, t) in enumerate(zip(enc["input_ids"], types))]
    c.build(train=rows)  # a list of rows: the first batch (rows 0..3)
    c.train_raises(ModelError, "column 'token_type_ids' has the segment id 2 (row 3)", "type_vocab_size=2")


@case("P25")
def _float_input_ids(c):
    from datasets import Dataset
    enc = c.tok(c.texts(), truncation=True, max_length=32)
    floats = [[float(v) for v in x] for x in enc["input_ids"]]
    c.build(train=Dataset.from_dict({"input_ids": floats, "label": [0, 1] * 4}))
    c.train_raises(DataError, "train_dataset column 'input_ids' holds floats", "ids must be integers",
                   "cast_column('input_ids'")
    c.build(train=[{"input_ids": x, "label": i % 2} for i, x in enumerate(floats)])
    c.train_raises(DataError, "column 'input_ids' holds floats (row 0: 101.0)")


@case("P26")
def _optimizer_over_another_model(c):
    other = c.make_model()  # e.g. a second from_pretrained: same shapes, other tensors
    c.build(train=c.data([0, 1] * 4), optimizers=(torch.optim.SGD(other.parameters(), lr=0.1), None))
    c.train_raises(ConfigError, "the SGD holds none of the model's", "trainable parameters",
                   "another instance of the model", "SGD(model.parameters(), ...)")


# ============================================================================================ pre-flight: metrics
def _accuracy(eval_pred):
    import numpy as np
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, -1) == labels).mean())}


@case("P18")
def _metric_for_best_model_not_produced(c):
    c.build(train=c.data([0, 1] * 4), eval_dataset=c.data([0, 1] * 4), compute_metrics=_accuracy,
            args=c.args(eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
                        load_best_model_at_end=True, metric_for_best_model="f1"))
    c.train_raises(ConfigError, "metric_for_best_model='f1': evaluation produces no 'eval_f1'",
                   "checked on one batch before training", "eval_accuracy", "eval_loss")
    assert not any(p.name.startswith("checkpoint") for p in (c.tmp / "out").iterdir())


@case("P19")
def _compute_metrics_not_a_number(c):
    c.build(train=c.data([0, 1] * 4), eval_dataset=c.data([0, 1] * 4),
            compute_metrics=lambda p: {"accuracy": 0.5, "report": "all good"},
            args=c.args(eval_strategy="steps", eval_steps=1))
    c.train_raises(ConfigError, "compute_metrics returned 'report': 'all good' (str), which is not a number",
                   "plain numbers")


@case("P20")
def _compute_metrics_not_a_dict(c):
    c.build(train=c.data([0, 1] * 4), eval_dataset=c.data([0, 1] * 4), compute_metrics=lambda p: 0.5,
            args=c.args(eval_strategy="epoch"))
    c.train_raises(ConfigError, "compute_metrics must return a dict", "got float")


# ============================================================================================ the tests
def _ids_in_docs() -> list[str]:
    return re.findall(r"^### ([EP]\d\d)\b", DOCS.read_text(), flags=re.M)


def test_catalog_and_tests_agree():
    documented = _ids_in_docs()
    assert len(documented) == len(set(documented)), "duplicate ids in docs/errors.md"
    assert set(documented) == set(CASES), (sorted(set(documented) - set(CASES)), sorted(set(CASES) - set(documented)))


@pytest.mark.parametrize("cid", sorted(CASES))
def test_error_case(cid, tmp_path, tokenizer, make_tiny_model, monkeypatch):
    CASES[cid](Ctx(tmp_path, tokenizer, make_tiny_model, monkeypatch))


def test_valid_inputs_pass_preflight_and_train(tmp_path, tokenizer, make_tiny_model, monkeypatch):
    """The checks have no false alarm on ordinary data (classification, regression, multi-label, ClassLabel,
    -100 ignored labels, list datasets, eval with metrics and best model) and leave the RNGs untouched."""
    from datasets import ClassLabel
    c = Ctx(tmp_path, tokenizer, make_tiny_model, monkeypatch)
    cases = [
        (c.make_model(), c.data([0, 1] * 4)),
        (c.make_model(num_labels=1), c.data([0.5, 1.5, 2.0, 0.0] * 2)),
        (c.make_model(num_labels=1, problem_type="regression"), c.data([0, 3, 5, 1] * 2)),
        (c.make_model(num_labels=3), c.data([[1.0, 0.0, 1.0]] * 8)),
        (c.make_model(num_labels=3), c.data([0, 1, 2, -100] * 2).cast_column("label", ClassLabel(names=["a", "b",
                                                                                                        "c"]))),
    ]
    for i, (model, data) in enumerate(cases):
        trainer = Trainer(model, c.args(output_dir=str(tmp_path / f"o{i}"), max_steps=1), train_dataset=data,
                          processing_class=tokenizer)
        trainer.train()
        assert trainer.state.global_step == 1
    trainer = Trainer(c.make_model(), c.args(output_dir=str(tmp_path / "best"), eval_strategy="steps", eval_steps=1,
                                             save_steps=1, save_strategy="steps", load_best_model_at_end=True,
                                             metric_for_best_model="accuracy", max_steps=2),
                      train_dataset=c.data([0, 1] * 4), eval_dataset=c.data([0, 1] * 4), processing_class=tokenizer,
                      compute_metrics=_accuracy)
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    assert len(evals) == 2  # the dry run on one batch is not logged


def test_preflight_leaves_rng_untouched(tmp_path, tokenizer, make_tiny_model, sst2_small):
    from trainwright.preflight import preflight
    train, _ = sst2_small
    trainer = Trainer(make_tiny_model(), TrainingArguments(str(tmp_path), report_to="none", max_steps=1,
                                                           disable_tqdm=True, eval_strategy="no"),
                      train_dataset=train.select(range(32)), processing_class=tokenizer)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    preflight(trainer, trainer.get_train_dataloader())
    assert torch.equal(before, torch.get_rng_state())


def test_preflight_can_be_skipped(tmp_path, tokenizer, make_tiny_model, monkeypatch):
    c = Ctx(tmp_path, tokenizer, make_tiny_model, monkeypatch)
    monkeypatch.setenv("TRAINWRIGHT_SKIP_PREFLIGHT", "1")
    c.build(train=c.data([0, 1, 2, 5, 0, 1, 2, 1]))
    with pytest.raises(Exception) as info:  # the raw error from deep inside the model
        c.trainer.train()
    assert not isinstance(info.value, ModelError)


def test_fp16_on_cpu_trains(tmp_path, tokenizer, make_tiny_model, monkeypatch):
    """transformers allows fp16 on the CPU with torch >= 2.3; so does trainwright where autocast works."""
    from trainwright.precision import fp16_supported
    if not fp16_supported(torch.device("cpu")):
        pytest.skip("this torch build has no float16 CPU autocast")
    c = Ctx(tmp_path, tokenizer, make_tiny_model, monkeypatch)
    c.build(train=c.data([0, 1] * 4), args=c.args(fp16=True, use_cpu=True))
    out = c.trainer.train()
    assert out.global_step == 2 and all(torch.isfinite(p).all() for p in c.trainer.model.parameters())


def test_preflight_leaves_a_seeded_collator_untouched(tmp_path, tokenizer, sst2_small):
    """The first batch is collated for the checks; a collator's private, seeded generator (MLM masking) must
    give the same masks afterwards as if the checks had not run."""
    from transformers import BertForMaskedLM

    from conftest import tiny_bert_config
    from trainwright import DataCollatorForLanguageModeling
    from trainwright.preflight import preflight
    train = sst2_small[0].select(range(32)).remove_columns(["sentence", "label"])
    rows = [train[i] for i in range(8)]
    expected = DataCollatorForLanguageModeling(tokenizer, seed=0)(rows)
    collator = DataCollatorForLanguageModeling(tokenizer, seed=0)
    trainer = Trainer(BertForMaskedLM(tiny_bert_config(tokenizer)),
                      TrainingArguments(str(tmp_path), report_to="none", max_steps=1, disable_tqdm=True,
                                        per_device_train_batch_size=8, train_sampling_strategy="sequential"),
                      train_dataset=train, data_collator=collator)
    preflight(trainer, trainer.get_train_dataloader())
    got = collator(rows)
    assert torch.equal(got["labels"], expected["labels"]) and torch.equal(got["input_ids"], expected["input_ids"])


def test_metric_that_needs_more_than_one_batch_is_left_to_the_first_evaluation(tmp_path, tokenizer, make_tiny_model,
                                                                                monkeypatch):
    """compute_metrics failing on the one-batch dry run (here: it needs 8 rows) is tried on the whole (small) eval
    set, where it works: no warning, training goes on and the real evaluations use it. (A set too large to evaluate
    before training gets a warning instead: tests/test_subclasses.py.)"""
    def needs_all_rows(eval_pred):
        if len(eval_pred.label_ids) < 8:
            raise ValueError("need every row")
        return _accuracy(eval_pred)

    c = Ctx(tmp_path, tokenizer, make_tiny_model, monkeypatch)
    c.build(train=c.data([0, 1] * 4), eval_dataset=c.data([0, 1] * 4), compute_metrics=needs_all_rows,
            args=c.args(eval_strategy="steps", eval_steps=1, metric_for_best_model="accuracy",
                        save_strategy="best"))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="compute_metrics could not run")
        out = c.trainer.train()
    assert out.global_step == 2
    assert c.trainer.compute_metrics is needs_all_rows
    assert len([h for h in c.trainer.state.log_history if "eval_accuracy" in h]) == 2


def test_nan_label_warns_once_with_its_row(tmp_path, tokenizer, make_tiny_model, monkeypatch):
    """A NaN regression target is not skipped silently: one warning, naming the column and the row."""
    import warnings as w
    c = Ctx(tmp_path, tokenizer, make_tiny_model, monkeypatch)
    c.build(model=c.make_model(num_labels=1), train=c.data([0.5, 1.0, 0.25, 0.0, 0.75, float("nan"), 0.5, 1.0]))
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        c.trainer.train()
    nan = [str(x.message) for x in caught if "NaN label" in str(x.message)]
    assert len(nan) == 1, nan
    assert "column 'labels' has a NaN label (first in row 5)" in nan[0] and "filter" in nan[0]
    rows = [{"input_ids": x, "label": v} for x, v in zip(c.tok(c.texts())["input_ids"], [0.5, float("nan")] * 4)]
    c.build(model=c.make_model(num_labels=1), train=rows)
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        c.trainer.train()
    nan = [str(x.message) for x in caught if "NaN label" in str(x.message)]
    assert len(nan) == 1 and "column 'label' has a NaN label (first in row 1)" in nan[0], nan


def test_optimizer_leaving_out_parameters_warns_and_trains(tmp_path, tokenizer, make_tiny_model, monkeypatch):
    c = Ctx(tmp_path, tokenizer, make_tiny_model, monkeypatch)
    model = c.make_model()
    c.build(model=model, train=c.data([0, 1] * 4), optimizers=(torch.optim.SGD(model.classifier.parameters(), lr=0.1),
                                                               None))
    with pytest.warns(UserWarning, match="leaves out .* trainable parameters"):
        out = c.trainer.train()
    assert out.global_step == 2


def test_collator_failure_during_training_names_the_rows(tmp_path, tokenizer, make_tiny_model, monkeypatch):
    """A None label beyond the first batch of a (non-list) dataset: the collator's error names the batch's rows and
    the None."""
    c = Ctx(tmp_path, tokenizer, make_tiny_model, monkeypatch)
    ids = c.tok(c.texts())["input_ids"]

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"input_ids": ids[i], "label": None if i == 6 else i % 2}
    c.build(train=Rows(), args=c.args(train_sampling_strategy="sequential"))
    with pytest.raises(DataError) as info:
        c.trainer.train()
    message = str(info.value)
    assert "failed on the train_dataset batch of rows [4, 5, 6, 7]" in message
    assert "Row 6 has a None label in column 'label'" in message


def test_tuple_batches_train_with_an_overridden_compute_loss(tmp_path, tokenizer, make_tiny_model, monkeypatch):
    """As in transformers, a collator may return its own structure when compute_loss unpacks it."""
    c = Ctx(tmp_path, tokenizer, make_tiny_model, monkeypatch)

    class TupleLoss(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, labels = inputs
            out = model(input_ids=ids, labels=labels)
            return (out.loss, out) if return_outputs else out.loss

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in rows])
        return ids, torch.tensor([r["labels"] for r in rows])
    trainer = TupleLoss(c.make_model(), c.args(), train_dataset=c.data([0, 1] * 4, column="labels"),
                        data_collator=collate)
    assert trainer.train().global_step == 2
