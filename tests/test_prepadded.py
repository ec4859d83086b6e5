"""Pre-padded batches (data/trim.py): every batch cut to its longest real row, outputs unchanged.

Each exactness test collates the same pre-padded rows through the real training dataloader twice
(trim_padding=False, and the default) and runs the model on both batches: logits of the real tokens to 1e-5,
the loss to 1e-6.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DATA, mrpc_dataset, sst2_dataset
from trainwright import ConfigError, Trainer, TrainingArguments
from trainwright.data.trim import PaddingTrimmer, trimmed_lengths


def _args(tmp_path, name, **kw):
    kw.setdefault("per_device_train_batch_size", 8)
    return TrainingArguments(output_dir=str(tmp_path / name), report_to="none", disable_tqdm=True,
                             save_strategy="no", **kw)


def collate_both(tmp_path, model, rows, collator=None, **kw):
    """(untrimmed batch, trimmed batch) of ``rows`` from the training dataloader's collate function."""
    out = []
    for trim in (False, None):
        trainer = Trainer(model=model, args=_args(tmp_path, f"trim{trim}", trim_padding=trim, **kw),
                          train_dataset=rows, data_collator=collator)
        out.append(trainer.get_train_dataloader().collate_fn(rows))
    return out


def run(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch)


def sst2_rows(tokenizer, n=8, max_length=64, **tok):
    texts = [r["sentence"] for r in sst2_dataset("train", n)]
    enc = tokenizer(texts, truncation=True, padding="max_length", max_length=max_length, **tok)
    return [{**{k: enc[k][i] for k in enc}, "label": i % 2} for i in range(n)]


def test_sequence_classification_exact(tmp_path, tokenizer, make_tiny_model):
    model = make_tiny_model()
    rows = sst2_rows(tokenizer)
    full, cut = collate_both(tmp_path, model, rows)
    longest = int(full["attention_mask"].sum(1).max())
    assert full["input_ids"].shape == (8, 64)
    assert cut["input_ids"].shape == cut["attention_mask"].shape == cut["token_type_ids"].shape == (8, longest)
    assert torch.equal(cut["labels"], full["labels"])
    a, b = run(model, full), run(model, cut)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)
    assert abs(float(a.loss) - float(b.loss)) <= 1e-6


def test_sentence_pairs_keep_token_type_ids(tmp_path, tokenizer, make_tiny_model):
    model = make_tiny_model()
    pairs = mrpc_dataset("train", 8)
    enc = tokenizer(list(pairs["sentence1"]), list(pairs["sentence2"]), truncation=True, padding="max_length",
                    max_length=128)
    rows = [{**{k: enc[k][i] for k in enc}, "label": pairs["label"][i]} for i in range(8)]
    full, cut = collate_both(tmp_path, model, rows)
    width = cut["input_ids"].shape[1]
    assert width < 128 and torch.equal(cut["token_type_ids"], full["token_type_ids"][:, :width])
    a, b = run(model, full), run(model, cut)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)
    assert abs(float(a.loss) - float(b.loss)) <= 1e-6


def _token_rows(tokenizer, n=8, max_length=48, padding_side="right"):
    old = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        rows = sst2_rows(tokenizer, n, max_length)
    finally:
        tokenizer.padding_side = old
    rng = np.random.default_rng(0)
    for row in rows:
        row.pop("label")
        row["labels"] = [int(rng.integers(0, 5)) if m else -100 for m in row["attention_mask"]]
    return rows


def test_token_classification_exact(tmp_path, tokenizer, make_tiny_model):
    model = make_tiny_model(head="token", num_labels=5)
    full, cut = collate_both(tmp_path, model, _token_rows(tokenizer))
    width = cut["input_ids"].shape[1]
    assert width == int(full["attention_mask"].sum(1).max()) < 48 and cut["labels"].shape == (8, width)
    a, b = run(model, full), run(model, cut)
    real = cut["attention_mask"].bool()
    torch.testing.assert_close(b.logits[real], a.logits[:, :width][real], atol=1e-5, rtol=0)
    assert abs(float(a.loss) - float(b.loss)) <= 1e-6


def _gpt2(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=2,
                                      n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      pad_token_id=tokenizer.pad_token_id))


def _lm_rows(tokenizer, padding_side="right", n=8, max_length=64):
    lines = [x for x in (DATA / "tinyshakespeare" / "input.txt").read_text().splitlines() if x.strip()][:n]
    old = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        enc = tokenizer(lines, truncation=True, padding="max_length", max_length=max_length)
    finally:
        tokenizer.padding_side = old
    return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": [t if m else -100 for t, m in zip(enc["input_ids"][i], enc["attention_mask"][i])]}
            for i in range(n)]


def test_causal_lm_exact(tmp_path, tokenizer):
    model = _gpt2(tokenizer)
    full, cut = collate_both(tmp_path, model, _lm_rows(tokenizer))
    width = cut["input_ids"].shape[1]
    assert width == int(full["attention_mask"].sum(1).max()) < 64
    a, b = run(model, full), run(model, cut)
    real = cut["attention_mask"].bool()
    torch.testing.assert_close(b.logits[real], a.logits[:, :width][real], atol=1e-5, rtol=0)
    assert abs(float(a.loss) - float(b.loss)) <= 1e-6


def test_causal_lm_left_padding_is_not_cut_where_a_pad_predicts_a_label(tmp_path, tokenizer):
    # a left-padded row's first token is predicted from a pad, which sees a different set of pads once cut
    model = _gpt2(tokenizer)
    full, cut = collate_both(tmp_path, model, _lm_rows(tokenizer, "left"))
    assert torch.equal(cut["input_ids"], full["input_ids"])


def test_left_padding_cut_with_positions_from_tokens(tmp_path, tokenizer):
    """RoBERTa computes positions from the tokens, so leading pad columns can go (token-level labels)."""
    from transformers import RobertaConfig, RobertaForTokenClassification
    torch.manual_seed(0)
    model = RobertaForTokenClassification(RobertaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=5, pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, type_vocab_size=2))
    full, cut = collate_both(tmp_path, model, _token_rows(tokenizer, padding_side="left"))
    width = cut["input_ids"].shape[1]
    assert width == int(full["attention_mask"].sum(1).max()) < 48
    assert torch.equal(cut["input_ids"], full["input_ids"][:, -width:])
    a, b = run(model, full), run(model, cut)
    real = cut["attention_mask"].bool()
    torch.testing.assert_close(b.logits[real], a.logits[:, -width:][real], atol=1e-5, rtol=0)
    assert abs(float(a.loss) - float(b.loss)) <= 1e-6


def test_left_padding_kept_for_absolute_positions(tmp_path, tokenizer, make_tiny_model):
    # BERT numbers positions from column 0 and its classifier reads column 0: leading pads stay
    model = make_tiny_model(head="token", num_labels=5)
    full, cut = collate_both(tmp_path, model, _token_rows(tokenizer, padding_side="left"))
    assert torch.equal(cut["input_ids"], full["input_ids"])


def _bart(tokenizer):
    from transformers import BartConfig, BartForConditionalGeneration
    torch.manual_seed(0)
    return BartForConditionalGeneration(BartConfig(
        vocab_size=tokenizer.vocab_size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=96, dropout=0.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.cls_token_id))


def _seq2seq_rows(tokenizer, n=8):
    from conftest import read_tsv  # noqa: F401  (conftest's readers; multi30k is plain lines)
    en = (DATA / "multi30k" / "train.en").read_text(encoding="utf-8").splitlines()[:n]
    de = (DATA / "multi30k" / "train.de").read_text(encoding="utf-8").splitlines()[:n]
    src = tokenizer(en, truncation=True, padding="max_length", max_length=64)
    tgt = tokenizer(text_target=de, truncation=True, padding="max_length", max_length=80)
    # run_summarization.py with pad_to_max_length: the labels' padding replaced by -100
    return [{"input_ids": src["input_ids"][i], "attention_mask": src["attention_mask"][i],
             "labels": [t if t != tokenizer.pad_token_id else -100 for t in tgt["input_ids"][i]]} for i in range(n)]


def test_seq2seq_exact(tmp_path, tokenizer):
    model = _bart(tokenizer)
    full, cut = collate_both(tmp_path, model, _seq2seq_rows(tokenizer))
    enc_width, dec_width = cut["input_ids"].shape[1], cut["labels"].shape[1]
    assert enc_width == int(full["attention_mask"].sum(1).max()) < 64
    assert dec_width == int((full["labels"] != -100).sum(1).max()) < 80
    a, b = run(model, full), run(model, cut)
    counted = cut["labels"] != -100
    torch.testing.assert_close(b.logits[counted], a.logits[:, :dec_width][counted], atol=1e-5, rtol=0)
    real = cut["attention_mask"].bool()
    torch.testing.assert_close(b.encoder_last_hidden_state[real],
                               a.encoder_last_hidden_state[:, :enc_width][real], atol=1e-5, rtol=0)
    assert abs(float(a.loss) - float(b.loss)) <= 1e-6


def test_seq2seq_decoder_inputs_cut_with_labels(tmp_path, tokenizer):
    from transformers import DataCollatorForSeq2Seq
    model = _bart(tokenizer)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, padding="max_length", max_length=80)
    rows = _seq2seq_rows(tokenizer)
    full, cut = collate_both(tmp_path, model, rows, collator=collator)
    width = cut["labels"].shape[1]
    assert cut["decoder_input_ids"].shape == (8, width) and width < 80
    assert torch.equal(cut["decoder_input_ids"], full["decoder_input_ids"][:, :width])
    assert abs(float(run(model, full).loss) - float(run(model, cut).loss)) <= 1e-6


def test_pad_to_multiple_of_kept(tmp_path, tokenizer, make_tiny_model):
    from trainwright import DataCollatorWithPadding
    model = make_tiny_model()
    rows = sst2_rows(tokenizer)
    _, cut = collate_both(tmp_path, model, rows, collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8))
    longest = max(sum(r["attention_mask"]) for r in rows)
    assert cut["input_ids"].shape[1] == -(-longest // 8) * 8


def test_off_by_argument_and_for_models_without_attention_mask(tmp_path, tokenizer, make_tiny_model):
    rows = sst2_rows(tokenizer)

    class NoMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = make_tiny_model()

        def forward(self, input_ids, labels=None):
            return self.inner(input_ids=input_ids, labels=labels)

    full, cut = collate_both(tmp_path, NoMask(), rows)
    assert cut["input_ids"].shape == full["input_ids"].shape == (8, 64)
    with pytest.raises(ConfigError, match="trim_padding=True.*attention_mask"):
        Trainer(model=NoMask(), args=_args(tmp_path, "x", trim_padding=True), train_dataset=rows).get_train_dataloader()


def test_pad_back_only_token_level_outputs():
    trimmer = PaddingTrimmer(evaluating=True, forbidden_widths=(2,))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    batch = {"input_ids": mask * 7, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    cut, info = trimmer.trim(batch)
    assert cut["input_ids"].shape == (2, 3) and info == (2, 6, 0, 3)
    seq_logits, tok_logits = torch.zeros(2, 2), torch.ones(2, 3, 4)
    back = trimmer.pad_back((seq_logits, tok_logits), info)
    assert back[0].shape == (2, 2) and back[1].shape == (2, 6, 4)
    assert bool((back[1][:, 3:] == -100).all()) and bool((back[1][:, :3] == 1).all())
    # a width equal to num_labels (a sequence-level output's width) is widened by a column
    cut, info = trimmer.trim({"input_ids": mask[1:] * 7, "attention_mask": mask[1:]})
    assert cut["input_ids"].shape == (1, 3)


# ------------------------------------------------------------------------------------------ training and evaluation
def _prepadded_sst2(tokenizer, split, n, max_length=64):
    return sst2_dataset(split, n).map(lambda b: tokenizer(b["sentence"], truncation=True, padding="max_length",
                                                          max_length=max_length), batched=True)


def test_auto_groups_by_real_length_and_model_sees_trimmed_batches(tmp_path, tokenizer, make_tiny_model):
    train = _prepadded_sst2(tokenizer, "train", 128)
    model = make_tiny_model()
    widths = []
    model.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    trainer = Trainer(model=model, args=_args(tmp_path, "auto", max_steps=8), train_dataset=train,
                      processing_class=tokenizer)
    sampler = trainer.get_train_dataloader().batch_sampler
    assert sampler.group_by_length  # auto: grouped by the attention mask's real lengths
    real = np.asarray([sum(m) for m in train["attention_mask"]])
    np.testing.assert_array_equal(sampler.lengths, real)
    trainer.train()
    assert len(widths) == 8 and max(widths) < 64
    # each batch is as wide as its longest row
    for batch in sampler.global_batches(0)[:8]:
        assert int(real[batch].max()) in widths


@pytest.mark.slow
def test_training_matches_untrimmed(tmp_path, tokenizer, make_tiny_model):
    """Same batches (random order), trimmed or not: the same losses and weights."""
    train = _prepadded_sst2(tokenizer, "train", 64)
    results = []
    for trim in (False, None):
        model = make_tiny_model(seed=1)
        trainer = Trainer(model=model, args=_args(tmp_path, f"t{trim}", max_steps=6, trim_padding=trim,
                                                  train_sampling_strategy="random", logging_steps=1),
                          train_dataset=train, processing_class=tokenizer)
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        results.append((losses, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    (l0, w0), (l1, w1) = results
    np.testing.assert_allclose(l1, l0, atol=1e-5, rtol=0)
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k], atol=1e-5, rtol=0)


def test_evaluation_outputs_keep_their_shapes(tmp_path, tokenizer, make_tiny_model):
    from datasets import Dataset
    rows = _token_rows(tokenizer, n=24)
    ds = Dataset.from_list(rows)
    seen = {}

    def metrics(p):
        seen.setdefault("shapes", []).append((p.predictions.shape, p.label_ids.shape))
        preds = p.predictions.argmax(-1)
        counted = p.label_ids != -100
        return {"acc": float((preds[counted] == p.label_ids[counted]).mean())}

    outs = []
    for trim in (False, None):
        model = make_tiny_model(head="token", num_labels=5, seed=3)
        trainer = Trainer(model=model, args=_args(tmp_path, f"e{trim}", trim_padding=trim,
                                                  per_device_eval_batch_size=4),
                          eval_dataset=ds, compute_metrics=metrics)
        trainer.eval_sort_by_length = False  # the same batches (sorted batches change the batch means of the loss)
        out = trainer.predict(ds)
        outs.append(out)
    assert seen["shapes"][0] == seen["shapes"][1] == ((24, 48, 5), (24, 48))
    np.testing.assert_array_equal(outs[1].label_ids, outs[0].label_ids)
    real = np.asarray([r["attention_mask"] for r in rows], dtype=bool)
    np.testing.assert_allclose(outs[1].predictions[real], outs[0].predictions[real], atol=1e-5, rtol=0)
    assert (outs[1].predictions[:, real.sum(1).max():] == -100).all()  # cut columns: -100, as the loop pads
    assert outs[1].metrics["test_acc"] == outs[0].metrics["test_acc"]
    assert abs(outs[1].metrics["test_loss"] - outs[0].metrics["test_loss"]) <= 1e-6


def test_trimmed_lengths_from_arrow(tokenizer):
    ds = _prepadded_sst2(tokenizer, "train", 40).add_column("labels", [
        [0 if i < 3 else -100 for i in range(64)]] * 40)
    ds = ds.remove_columns(["label"])
    expected = np.asarray([max(sum(m), 3) for m in ds["attention_mask"]])
    np.testing.assert_array_equal(trimmed_lengths(ds), expected)
    np.testing.assert_array_equal(trimmed_lengths(ds, labels=False), [sum(m) for m in ds["attention_mask"]])
    picked = ds.shuffle(seed=0).select(range(10))  # an indices mapping
    np.testing.assert_array_equal(trimmed_lengths(picked), [max(sum(m), 3) for m in picked["attention_mask"]])
    np.testing.assert_array_equal(trimmed_lengths(list(picked)), trimmed_lengths(picked))


@pytest.mark.slow
@pytest.mark.parametrize("generate", [False, True], ids=["logits", "generate"])
def test_seq2seq_evaluation_outputs_unchanged(tmp_path, tokenizer, generate):
    from trainwright import Seq2SeqTrainer, Seq2SeqTrainingArguments
    rows = _seq2seq_rows(tokenizer, n=6)
    outs = []
    for trim in (False, None):
        args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / f"s{trim}{generate}"), report_to="none",
                                        disable_tqdm=True, per_device_eval_batch_size=3, trim_padding=trim,
                                        predict_with_generate=generate, generation_max_length=12)
        trainer = Seq2SeqTrainer(model=_bart(tokenizer), args=args, processing_class=tokenizer)
        trainer.eval_sort_by_length = False
        outs.append(trainer.predict(rows))
    full, cut = outs
    np.testing.assert_array_equal(cut.label_ids, full.label_ids)
    assert abs(cut.metrics["test_loss"] - full.metrics["test_loss"]) <= 1e-6
    if generate:
        np.testing.assert_array_equal(cut.predictions, full.predictions)
    else:
        assert [p.shape for p in cut.predictions] == [p.shape for p in full.predictions]
        np.testing.assert_allclose(cut.predictions[0], full.predictions[0], atol=1e-5, rtol=0)  # decoder logits
        real = np.asarray([r["attention_mask"] for r in rows], dtype=bool)
        np.testing.assert_allclose(cut.predictions[1][real], full.predictions[1][real], atol=1e-5, rtol=0)
        assert (cut.predictions[1][:, real.sum(1).max():] == -100).all()  # the encoder ran trimmed
