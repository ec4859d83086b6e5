"""Gradient accumulation is exact for every kind of loss: one optimizer step (plain SGD, no clipping) with batch 8
and with 4 x 2 accumulation (and 16 and 4 x 4) gives the same weights, to float rounding, and the same logged loss.

Covered: labels called ``labels`` (sequence and token classification, a causal LM with -100 padding), labels under
other names (question answering's start/end positions, a custom ``label_names``), a model that takes
``num_items_in_batch`` in forward, ``compute_loss`` overrides with and without a ``num_items_in_batch`` parameter,
and ``compute_loss_func``. The micro-batches differ in label tokens (sentences of different lengths), so dividing
each micro-batch's mean by the number of accumulation steps would not be exact."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import DATA, LABEL2ID, mrpc_dataset, read_conll, tiny_bert_config
from trainwright import DataCollatorForTokenClassification, Trainer, TrainingArguments

SPLITS = [(8, 4, 2), (16, 4, 4)]  # (big batch, micro batch, accumulation steps)
LR = 1.0


def _args(out, batch, accum, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                max_steps=1, optim="sgd", learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=0.0,
                logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, write_report=False,
                train_sampling_strategy="sequential")
    base.update(kw)
    return TrainingArguments(**base)


def _one_step(out, make_model, data, batch, accum, trainer_cls=Trainer, **kw):
    args_kw = {k: kw.pop(k) for k in list(kw) if k in ("label_names", "max_steps")}
    trainer = trainer_cls(make_model(), _args(out, batch, accum, **args_kw), train_dataset=data, **kw)
    result = trainer.train()
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return weights, result.training_loss, logged


def _assert_exact(tmp_path, make_model, data, trainer_cls=Trainer, split=SPLITS[0], **kw):
    big_batch, micro, accum = split
    start = {n: p.detach().clone() for n, p in make_model().named_parameters()}
    big, big_loss, big_logged = _one_step(tmp_path / "big", make_model, data, big_batch, 1, trainer_cls, **dict(kw))
    small, small_loss, small_logged = _one_step(tmp_path / "small", make_model, data, micro, accum, trainer_cls,
                                                **dict(kw))
    moved = max((big[n] - start[n]).abs().max().item() for n in big)
    assert moved > 1e-3, "the step did not change the weights visibly"
    diff = max((big[n] - small[n]).abs().max().item() for n in big)
    close = all(torch.allclose(big[n], small[n], rtol=1e-6, atol=1e-6) for n in big)  # float rounding only
    assert close, f"batch {big_batch} and {micro} x {accum} differ by {diff} (moved {moved})"
    assert small_loss == pytest.approx(big_loss, rel=1e-6), (big_loss, small_loss)
    assert small_logged == big_logged


# ------------------------------------------------------------------------------------------------ data
def _sst2(tokenizer, n=16):
    from conftest import sst2_dataset
    ds = sst2_dataset("train", n)
    return ds.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=48), batched=True,
                  remove_columns=["sentence"])


def _conll_rows(tokenizer, n=16):
    """CoNLL-2003 sentences with word-aligned tags (-100 on sub-words and special tokens): rows of different
    numbers of label tokens."""
    sentences = read_conll(DATA / "conll2003" / "eng.train", n, LABEL2ID)
    enc = tokenizer([s["tokens"] for s in sentences], is_split_into_words=True, truncation=True, max_length=48)
    rows = []
    for i, s in enumerate(sentences):
        prev, tags = None, []
        for w in enc.word_ids(i):
            tags.append(-100 if w is None or w == prev else s["ner_tags"][w])
            prev = w
        rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": tags})
    return rows


# ------------------------------------------------------------------------------------------------ (a) labels
@pytest.mark.parametrize("split", SPLITS, ids=["8=4x2", "16=4x4"])
def test_sequence_classification(tmp_path, tokenizer, make_tiny_model, split):
    _assert_exact(tmp_path, make_tiny_model, _sst2(tokenizer), split=split, processing_class=tokenizer)


@pytest.mark.parametrize("split", SPLITS, ids=["8=4x2", "16=4x4"])
def test_token_classification(tmp_path, tokenizer, make_tiny_model, split):
    rows = _conll_rows(tokenizer)
    counts = [sum(t != -100 for r in rows[i:i + 4] for t in r["labels"]) for i in range(0, 16, 4)]
    assert len(set(counts)) > 1  # micro-batches of different label-token counts
    _assert_exact(tmp_path, lambda: make_tiny_model(num_labels=len(LABEL2ID), head="token"), rows, split=split,
                  data_collator=DataCollatorForTokenClassification(tokenizer))


def _tiny_gpt2(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=2,
                                      n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


@pytest.mark.slow
@pytest.mark.parametrize("split", SPLITS, ids=["8=4x2", "16=4x4"])
def test_causal_lm_with_padding(tmp_path, tokenizer, split):
    from trainwright import DataCollatorForLanguageModeling
    data = _sst2(tokenizer).remove_columns(["label", "token_type_ids"])
    _assert_exact(tmp_path, lambda: _tiny_gpt2(tokenizer), data, split=split,
                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))


# ------------------------------------------------------------------------------------------------ (b) other names
def _qa_data(tokenizer, n=16):
    """MRPC pairs as (question, context) with an answer span in the context: one loss item per row. Padded to
    max_length as in transformers' QA recipe (the model's start/end softmax runs over the padding too)."""
    ds = mrpc_dataset("train", n)
    enc = tokenizer(list(ds["sentence1"]), list(ds["sentence2"]), truncation=True, max_length=64,
                    padding="max_length")
    starts, ends = [], []
    for i, types in enumerate(enc["token_type_ids"]):
        first = types.index(1)
        last = sum(enc["attention_mask"][i]) - 2  # before the final [SEP]
        s = first + i % max(1, last - first)
        starts.append(s)
        ends.append(min(last, s + 1 + i % 3))
    return [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
             "attention_mask": enc["attention_mask"][i], "start_positions": starts[i], "end_positions": ends[i]}
            for i in range(n)]


@pytest.mark.parametrize("split", SPLITS, ids=["8=4x2", "16=4x4"])
def test_question_answering_start_end_positions(tmp_path, tokenizer, split):
    from transformers import BertForQuestionAnswering

    def make():
        torch.manual_seed(0)
        return BertForQuestionAnswering(tiny_bert_config(tokenizer, dropout=0.0))
    _assert_exact(tmp_path, make, _qa_data(tokenizer), split=split, processing_class=tokenizer)


class TinyTagger(torch.nn.Module):
    """A token tagger whose targets are called ``targets`` (label_names=["targets"]): mean cross-entropy over
    the targets that are not -100."""

    def __init__(self, vocab, num_tags=9, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, 16)
        self.head = torch.nn.Linear(16, num_tags)

    def forward(self, input_ids, attention_mask=None, targets=None):
        logits = self.head(torch.tanh(self.embed(input_ids)))
        out = {"logits": logits}
        if targets is not None:
            out["loss"] = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return out


def _pad_collator(label_key):
    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        def pad(key, value):
            return torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows])
        return {"input_ids": pad("input_ids", 0), "attention_mask": pad("attention_mask", 0),
                label_key: pad(label_key, -100)}
    return collate


def test_custom_label_names(tmp_path, tokenizer):
    rows = [{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"], "targets": r["labels"]}
            for r in _conll_rows(tokenizer)]
    _assert_exact(tmp_path, lambda: TinyTagger(tokenizer.vocab_size), rows, label_names=["targets"],
                  data_collator=_pad_collator("targets"))


# ------------------------------------------------------------------------------------------ (c) num_items_in_batch
class ShiftingLM(torch.nn.Module):
    """A small causal LM (not named like one, so the Trainer does not know it shifts) that takes
    ``num_items_in_batch`` and returns ``sum / num_items_in_batch``: exact only if that count is passed to it."""

    def __init__(self, vocab, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, 16)
        self.head = torch.nn.Linear(16, vocab)

    def forward(self, input_ids, attention_mask=None, labels=None, num_items_in_batch=None):
        logits = self.head(torch.tanh(self.embed(input_ids)))
        out = {"logits": logits}
        if labels is not None:
            shifted = labels[:, 1:].flatten()
            flat = logits[:, :-1].flatten(0, 1)
            if num_items_in_batch is None:
                out["loss"] = F.cross_entropy(flat, shifted, ignore_index=-100)
            else:
                out["loss"] = F.cross_entropy(flat, shifted, ignore_index=-100, reduction="sum") / num_items_in_batch
        return out


def test_model_that_takes_num_items_in_batch(tmp_path, tokenizer):
    from trainwright import DataCollatorForLanguageModeling
    data = [{"input_ids": r["input_ids"]} for r in _sst2(tokenizer)]
    _assert_exact(tmp_path, lambda: ShiftingLM(tokenizer.vocab_size), data,
                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))


# ------------------------------------------------------------------------------------------------ (e) compute_loss
class MeanLossTrainer(Trainer):
    """transformers' contract without num_items_in_batch: the override returns this micro-batch's mean."""

    def compute_loss(self, model, inputs, return_outputs=False):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs["logits"].flatten(0, 1), labels.flatten(), ignore_index=-100)
        return (loss, outputs) if return_outputs else loss


class SumLossTrainer(Trainer):
    """transformers' contract with num_items_in_batch: the override normalises by the step's label tokens."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs["logits"].flatten(0, 1), labels.flatten(), ignore_index=-100,
                               reduction="sum" if num_items_in_batch is not None else "mean")
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
        return (loss, outputs) if return_outputs else loss


class SuperLossTrainer(Trainer):
    """An override that scales the Trainer's own loss: it passes num_items_in_batch on."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs=False, num_items_in_batch=num_items_in_batch)
        return 2.0 * loss


class KwargsSuperTrainer(Trainer):
    """``**kwargs`` passed on to the Trainer's compute_loss, which normalises."""

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        return super().compute_loss(model, inputs, return_outputs, **kwargs)


class KwargsMeanTrainer(MeanLossTrainer):
    """``**kwargs`` taken (so transformers' call works) and ignored: a per-micro-batch mean."""

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        return super().compute_loss(model, inputs, return_outputs)


class DeclaredMeanTrainer(SumLossTrainer):
    """transformers' ``loss_is_scaled_for_ga = False``: whatever the signature, the loss is a per-batch mean."""
    loss_is_scaled_for_ga = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, inputs, return_outputs, None)


@pytest.mark.parametrize("trainer_cls", [MeanLossTrainer, SumLossTrainer, SuperLossTrainer, KwargsSuperTrainer,
                                         KwargsMeanTrainer, DeclaredMeanTrainer],
                         ids=["without-num_items", "with-num_items", "calls-super", "kwargs-to-super", "kwargs-mean",
                              "loss_is_scaled_for_ga=False"])
def test_compute_loss_override(tmp_path, tokenizer, make_tiny_model, trainer_cls):
    _assert_exact(tmp_path, lambda: make_tiny_model(num_labels=len(LABEL2ID), head="token"), _conll_rows(tokenizer),
                  trainer_cls=trainer_cls, data_collator=DataCollatorForTokenClassification(tokenizer))


def test_compute_loss_override_without_num_items_on_question_answering(tmp_path, tokenizer):
    """A per-row mean from an override: the micro-batch's share is its rows / the step's rows. 12 rows: the
    second step is one micro-batch of 4 rows (the epoch's end), which dividing by the accumulation steps halves."""
    from transformers import BertForQuestionAnswering

    class QATrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False):
            outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss

    def make():
        torch.manual_seed(0)
        return BertForQuestionAnswering(tiny_bert_config(tokenizer, dropout=0.0))
    _assert_exact(tmp_path, make, _qa_data(tokenizer, n=12), trainer_cls=QATrainer, processing_class=tokenizer,
                  split=(8, 4, 2), max_steps=2)


# ------------------------------------------------------------------------------------------------ (f) compute_loss_func
def test_compute_loss_func(tmp_path, tokenizer, make_tiny_model):
    seen = []

    def loss_func(outputs, labels, num_items_in_batch=None):
        seen.append(num_items_in_batch)
        total = F.cross_entropy(outputs["logits"].flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        return total / num_items_in_batch
    _assert_exact(tmp_path, lambda: make_tiny_model(num_labels=len(LABEL2ID), head="token"), _conll_rows(tokenizer),
                  compute_loss_func=loss_func, data_collator=DataCollatorForTokenClassification(tokenizer))
    assert all(n is not None for n in seen)


# ------------------------------------------------------------------------------------------------ counting
def test_items_counted_per_kind_of_label():
    from trainwright.loss_scaling import count_items
    tokens = torch.tensor([[-100, 3, 4, -100], [-100, 5, -100, -100]])
    assert count_items({"labels": tokens}) == 3
    assert count_items({"labels": tokens}, shift=True) == 3  # position 0 is no target of a causal LM
    assert count_items({"labels": torch.tensor([[1, 2, 3], [4, -100, -100]])}, shift=True) == 2
    assert count_items({"labels": torch.tensor([0, 1, -100])}) == 2  # a row with label -100 is ignored
    assert count_items({"labels": torch.tensor([0.5, 1.5])}) == 2  # regression
    assert count_items({"labels": torch.ones(3, 4)}) == 12  # multi-label: BCE averages every element
    assert count_items({"input_ids": torch.zeros(5, 2), "start_positions": torch.tensor([1] * 5)},
                       ["start_positions", "end_positions"]) == 5
    assert count_items({"input_ids": torch.zeros(6, 2)}) == 6  # no labels: rows
    assert count_items({"labels": tokens, "shift_labels": torch.tensor([[1, -100]])}, shift=True) == 1
