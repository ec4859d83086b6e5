"""End-to-end fine-tuning of the three task families on real data (CoNLL-2003, Multi30k, Tiny Shakespeare), with
tiny models built from configs and the MiniLM WordPiece tokenizer; plus Seq2SeqTrainer / Seq2SeqTrainingArguments
unit tests (generation, gen_kwargs, order, padding, serialisation).

The figures a tiny model reaches here are printed (run with ``-s`` to see them) and are reported in docs/tasks.md.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import DATA, LABEL2ID, NER_LABELS, needs_data, read_conll
from trainwright import (
    ConfigError,
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    DataCollatorForTokenClassification,
    DataCollatorWithFlattening,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
    metrics,
)
from trainwright.data.packing import DataCollatorForPackedRows, pack_dataset
from trainwright.data.token_classification import tokenize_and_align_labels

QUIET = dict(report_to="none", disable_tqdm=True, save_strategy="no", write_report=False, seed=0)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are tiny (hidden 32-64): a second intra-op thread gains nothing, and on a shared 2-core
    machine it makes every op wait for a busy core (measured: 4-10x slower under load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ====================================================================== data readers (read-only, nothing copied)
def read_lines(path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [next(f).strip() for _ in range(n)]


class CompactVocab:
    """Renumber the WordPiece ids seen in a corpus to 0..V-1 ([PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3) so that the tiny
    models' embedding and LM head have a few thousand rows instead of 30,522: the tests stay fast on two CPU cores."""

    def __init__(self, tokenizer, id_lists):
        specials = [tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id]
        seen = set()
        for ids in id_lists:
            seen.update(ids)
        order = specials + sorted(seen - set(specials))
        self.to_compact = {tok_id: i for i, tok_id in enumerate(order)}  # [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3
        self.to_original = np.zeros(len(self.to_compact), dtype=np.int64)
        for orig, new in self.to_compact.items():
            self.to_original[new] = orig
        self.unk = self.to_compact[tokenizer.unk_token_id]
        self.size = len(self.to_compact)

    def __getitem__(self, tok_id: int) -> int:
        return self.to_compact[tok_id]

    def encode(self, ids):
        return [self.to_compact.get(t, self.unk) if t >= 0 else t for t in ids]

    def decode_ids(self, array):
        """Compact ids (any shape; -100 kept) back to tokenizer ids."""
        array = np.asarray(array)
        return np.where(array >= 0, self.to_original[np.clip(array, 0, None)], array)


# ====================================================================== token classification (CoNLL-2003)
def ner_compute_metrics(eval_pred):
    """Argmax over the logits, -100 positions dropped, ids turned into tag names, seqeval entity scores."""
    seqeval = metrics.load("seqeval")
    logits, labels = eval_pred
    predictions = np.argmax(logits, axis=-1)
    true_predictions = [[NER_LABELS[p] for p, tag in zip(pred, lab) if tag != -100]
                        for pred, lab in zip(predictions, labels)]
    true_labels = [[NER_LABELS[tag] for p, tag in zip(pred, lab) if tag != -100]
                   for pred, lab in zip(predictions, labels)]
    results = seqeval.compute(predictions=true_predictions, references=true_labels, zero_division=0)
    return {"precision": results["overall_precision"], "recall": results["overall_recall"],
            "f1": results["overall_f1"], "accuracy": results["overall_accuracy"]}


@pytest.mark.slow
@needs_data
def test_conll2003_ner_token_classification(tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import BertConfig, BertForTokenClassification

    align = tokenize_and_align_labels(tokenizer, max_length=64)
    train = Dataset.from_list(read_conll(DATA / "conll2003" / "eng.train", 800, LABEL2ID))
    dev = Dataset.from_list(read_conll(DATA / "conll2003" / "eng.testa", 100, LABEL2ID))
    train = train.map(align, batched=True, remove_columns=train.column_names)
    dev = dev.map(align, batched=True, remove_columns=dev.column_names)
    # first piece of every word labelled, the other pieces and [CLS]/[SEP] at -100
    row = train[0]
    assert len(row["labels"]) == len(row["input_ids"]) and row["labels"][0] == -100 and row["labels"][-1] == -100
    vocab = CompactVocab(tokenizer, list(train["input_ids"]) + list(dev["input_ids"]))
    train = train.map(lambda b: {"input_ids": [vocab.encode(x) for x in b["input_ids"]]}, batched=True)
    dev = dev.map(lambda b: {"input_ids": [vocab.encode(x) for x in b["input_ids"]]}, batched=True)

    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab.size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(NER_LABELS),
                        id2label=dict(enumerate(NER_LABELS)), label2id=LABEL2ID,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForTokenClassification(config)
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, learning_rate=5e-3, warmup_steps=0.1,
                             per_device_train_batch_size=16, per_device_eval_batch_size=50,
                             eval_strategy="epoch", logging_steps=25, **QUIET)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer),
                      compute_metrics=ner_compute_metrics)
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_f1" in h]
    print("\nCoNLL NER per epoch (eval_loss, entity F1):",
          [(round(h["eval_loss"], 3), round(h["eval_f1"], 3)) for h in evals])
    assert len(evals) == 2
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert evals[-1]["eval_f1"] > 0.25  # measured: 0.42 (precision 0.44, recall 0.41)
    assert 0 <= evals[-1]["eval_precision"] <= 1 and evals[-1]["eval_accuracy"] > 0.8

    out = trainer.predict(dev)
    assert out.predictions.shape[:2] == out.label_ids.shape and out.predictions.shape[0] == len(dev)
    assert out.metrics["test_f1"] == pytest.approx(evals[-1]["eval_f1"])


# ====================================================================== seq2seq (Multi30k en -> de)
def tiny_bart(tokenizer, vocab_size=None, seed=0):
    from transformers import BartConfig, BartForConditionalGeneration
    torch.manual_seed(seed)
    config = BartConfig(vocab_size=vocab_size or tokenizer.vocab_size, d_model=64, encoder_layers=2,
                        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                        encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128, dropout=0.0,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    return BartForConditionalGeneration(config)


def tiny_encoder_decoder(vocab_size, seed=0):
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel
    torch.manual_seed(seed)
    kw = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**kw), BertConfig(**kw))
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    return EncoderDecoderModel(config=config)


def multi30k(tokenizer, split: str, n: int, max_length: int = 32):
    """Pairs of tokenized English sources and German targets ([CLS] dropped from the target: the decoder starts
    with it, decoder_start_token_id)."""
    from datasets import Dataset
    en = read_lines(DATA / "multi30k" / f"{split}.en", n)
    de = read_lines(DATA / "multi30k" / f"{split}.de", n)
    enc = tokenizer(en, truncation=True, max_length=max_length, return_token_type_ids=False)
    tgt = tokenizer(text_target=de, truncation=True, max_length=max_length + 1)["input_ids"]
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                              "labels": [t[1:] for t in tgt]})


def compact_seq2seq(tokenizer, *datasets):
    """Compact vocabulary with [PAD]=0, [CLS]=1 (decoder start), [SEP]=2 (end of sequence), applied to all sets."""
    vocab = CompactVocab(tokenizer, [ids for ds in datasets for col in ("input_ids", "labels") for ids in ds[col]])
    assert (vocab[tokenizer.pad_token_id], vocab[tokenizer.cls_token_id], vocab[tokenizer.sep_token_id]) == (0, 1, 2)
    out = [ds.map(lambda b: {"input_ids": [vocab.encode(x) for x in b["input_ids"]],
                             "labels": [vocab.encode(x) for x in b["labels"]]}, batched=True) for ds in datasets]
    return vocab, out


def bleu_metrics(tokenizer, vocab):
    sacrebleu = metrics.load("sacrebleu")

    def compute_metrics(eval_pred):
        preds, labels = eval_pred
        preds = np.where(preds != -100, preds, 0)  # as in the transformers examples
        labels = np.where(labels != -100, labels, 0)
        decoded_preds = tokenizer.batch_decode(vocab.decode_ids(preds), skip_special_tokens=True)
        decoded_labels = tokenizer.batch_decode(vocab.decode_ids(labels), skip_special_tokens=True)
        result = sacrebleu.compute(predictions=[p.strip() for p in decoded_preds],
                                   references=[[text.strip()] for text in decoded_labels])
        gen_len = np.mean([np.count_nonzero((p != 0) & (p != 1)) for p in preds])
        return {"bleu": result["score"], "gen_len": float(gen_len)}
    return compute_metrics


@pytest.mark.slow
@needs_data
def test_multi30k_translation_seq2seq(tokenizer, tmp_path):
    train = multi30k(tokenizer, "train", 800)
    val = multi30k(tokenizer, "val", 48)
    vocab, (train, val) = compact_seq2seq(tokenizer, train, val)
    model = tiny_bart(tokenizer, vocab.size)
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), predict_with_generate=True, generation_max_length=32,
        num_train_epochs=1, learning_rate=3e-3, warmup_steps=0.1, per_device_train_batch_size=16,
        per_device_eval_batch_size=48, eval_strategy="steps", eval_steps=25, eval_on_start=True,
        logging_steps=25, **QUIET)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                             processing_class=tokenizer, data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                             compute_metrics=bleu_metrics(tokenizer, vocab))
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_bleu" in h]
    print("\nMulti30k per evaluation (step, eval_loss, BLEU, gen_len):",
          [(h["step"], round(h["eval_loss"], 3), round(h["eval_bleu"], 2), h["eval_gen_len"]) for h in evals])
    assert len(evals) == 3 and evals[0]["step"] == 0
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 1.0
    assert all(math.isfinite(h["eval_bleu"]) and h["eval_bleu"] >= 0 for h in evals)

    out = trainer.predict(val, max_new_tokens=12)
    assert out.predictions.shape == (len(val), 13)
    assert "test_bleu" in out.metrics and "test_loss" in out.metrics


# ====================================================================== causal LM (Tiny Shakespeare), padded or packed
def shakespeare_blocks(tokenizer, n_speeches: int, block: int = 64):
    """Speeches (separated by blank lines) tokenized without special tokens and chunked into blocks of at most
    ``block`` tokens: variable-length causal-LM examples."""
    text = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    speeches = [s.strip() for s in text.split("\n\n") if s.strip()][:n_speeches]
    blocks = []
    for ids in tokenizer(speeches, add_special_tokens=False)["input_ids"]:
        blocks += [ids[i:i + block] for i in range(0, len(ids), block) if len(ids[i:i + block]) >= 2]
    return blocks


def tiny_llama(vocab_size, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=None, eos_token_id=None, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def label_tokens_per_epoch(trainer) -> int:
    """Next-token targets in one pass over the trainer's own training DataLoader (labels shifted by one)."""
    return sum(int((batch["labels"][..., 1:] != -100).sum()) for batch in trainer.get_train_dataloader())


@pytest.fixture(scope="module")
def shakespeare(tokenizer):
    if not DATA.is_dir():
        pytest.skip("no shared data")
    blocks = shakespeare_blocks(tokenizer, 700)
    vocab = CompactVocab(tokenizer, blocks)
    blocks = [vocab.encode(b) for b in blocks]
    return vocab, blocks[:-64], blocks[-64:]


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("mode", ["padded", "packed_rows", "flattening"])
def test_shakespeare_causal_lm(mode, tokenizer, shakespeare, tmp_path):
    from datasets import Dataset
    vocab, train_blocks, eval_blocks = shakespeare
    train = Dataset.from_dict({"input_ids": train_blocks})
    evalset = Dataset.from_dict({"input_ids": eval_blocks})
    expected_targets = sum(len(b) - 1 for b in train_blocks)  # every token but each example's first is a target
    batch = 8
    if mode == "padded":
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    elif mode == "packed_rows":
        train, evalset = pack_dataset(train, max_length=128), pack_dataset(evalset, max_length=128)
        collator = DataCollatorForPackedRows(pad_token_id=tokenizer.pad_token_id)
        batch = 4  # rows of up to 128 tokens hold about twice the tokens of a padded row of 64
    else:
        collator = DataCollatorWithFlattening()
    model = tiny_llama(vocab.size)
    assert model.config.use_cache  # the Trainer must turn it off: with a cache, packed examples see each other
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, learning_rate=3e-3, warmup_steps=0.1,
                             per_device_train_batch_size=batch, per_device_eval_batch_size=64,
                             eval_strategy="epoch", eval_on_start=True, logging_steps=20, **QUIET)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evalset, data_collator=collator)
    trainer.train()
    assert model.config.use_cache is False
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    ppl = [metrics.perplexity_from_loss(h["eval_loss"]) for h in evals]
    print(f"\nShakespeare {mode}: {len(train)} rows, eval_loss {[round(h['eval_loss'], 3) for h in evals]}, "
          f"perplexity {[round(p, 1) for p in ppl]}")
    assert len(evals) == 2 and evals[0]["step"] == 0
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 1.0
    assert ppl[-1] < ppl[0] / 3
    # the same next-token targets in every mode: packing neither drops nor duplicates a token
    assert label_tokens_per_epoch(trainer) == expected_targets


@needs_data
def test_packed_evaluation_before_training_isolates_examples(tokenizer, shakespeare, tmp_path):
    """evaluate() called before train() on packed rows gives the per-example loss: the model's KV cache is off
    from the start (as transformers.Trainer does it in __init__), so packed examples do not attend to each other."""
    from datasets import Dataset
    vocab, _, eval_blocks = shakespeare
    model = tiny_llama(vocab.size, seed=1)
    total, count = 0.0, 0
    with torch.no_grad():
        for seq in eval_blocks:
            ids = torch.tensor([seq])
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += len(seq) - 1
    per_example = total / count
    evalset = pack_dataset(Dataset.from_dict({"input_ids": eval_blocks}), max_length=4096)
    assert len(evalset) == 1  # one packed row, one batch: eval_loss is the token-weighted mean
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=8, **QUIET)
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithFlattening())
    assert trainer.evaluate(evalset)["eval_loss"] == pytest.approx(per_example, rel=1e-4)


# ====================================================================== Seq2SeqTrainer units
@pytest.fixture(scope="module")
def toy_pairs():
    """Eleven source/target pairs of varied lengths in a 50-token vocabulary (0 pad, 1 start, 2 end)."""
    from datasets import Dataset
    rng = np.random.default_rng(0)
    src = [rng.integers(3, 50, size=int(n)).tolist() for n in rng.integers(3, 12, size=11)]
    tgt = [rng.integers(3, 50, size=int(n)).tolist() + [2] for n in rng.integers(1, 9, size=11)]
    return Dataset.from_dict({"input_ids": src, "attention_mask": [[1] * len(s) for s in src], "labels": tgt})


@pytest.mark.filterwarnings("ignore:Version v4.12.0 introduces:FutureWarning")
@pytest.mark.parametrize("arch", ["bart", "encoder_decoder"])
def test_seq2seq_predict_order_padding_and_gen_kwargs(arch, tokenizer, toy_pairs, tmp_path):
    model = tiny_bart(tokenizer, 50) if arch == "bart" else tiny_encoder_decoder(50)
    model.eval()
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True, generation_max_length=9,
                                    per_device_eval_batch_size=4, **QUIET)
    trainer = Seq2SeqTrainer(model=model, args=args, processing_class=tokenizer,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))

    out = trainer.predict(toy_pairs, max_new_tokens=5)
    assert out.predictions.shape == (11, 6)  # decoder start + 5 new tokens, every batch padded to that width
    assert (out.predictions[:, 0] == 1).all() and not (out.predictions == -100).any()
    assert "test_loss" in out.metrics and math.isfinite(out.metrics["test_loss"])
    # dataset order: row i is what generate() gives for example i alone (unpadded)
    for i in range(len(toy_pairs)):
        ids = torch.tensor([toy_pairs[i]["input_ids"]])
        single = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5)[0].tolist()
        row = out.predictions[i].tolist()
        assert row[:len(single)] == single and all(t == tokenizer.pad_token_id for t in row[len(single):])
    # labels: in order, -100 where a label is shorter than the widest one, never the pad id
    width = out.label_ids.shape[1]
    for i in range(len(toy_pairs)):
        lab = toy_pairs[i]["labels"]
        assert out.label_ids[i].tolist() == lab + [-100] * (width - len(lab))

    # generation_max_length of the arguments is the default; max_length / num_beams passed per call win
    assert trainer.predict(toy_pairs).predictions.shape == (11, 9)
    assert trainer.predict(toy_pairs, max_length=4, num_beams=2).predictions.shape == (11, 4)
    metrics_ = trainer.evaluate(toy_pairs, max_new_tokens=3)
    assert "eval_loss" in metrics_

    # without predict_with_generate: logits, like Trainer
    plain = Seq2SeqTrainer(model=model, args=Seq2SeqTrainingArguments(output_dir=str(tmp_path), **QUIET),
                           processing_class=tokenizer, data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
    logits = plain.predict(toy_pairs).predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    assert logits.ndim == 3 and logits.shape[-1] == 50


def test_seq2seq_compute_metrics_gets_generated_ids(tokenizer, toy_pairs, tmp_path):
    seen = {}

    def compute_metrics(eval_pred):
        seen["preds"], seen["labels"] = eval_pred.predictions, eval_pred.label_ids
        exact = [np.array_equal(p[1:1 + (ref != -100).sum()], ref[ref != -100]) for p, ref in zip(*eval_pred)]
        return {"exact": float(np.mean(exact))}

    model = tiny_bart(tokenizer, 50)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True,
                                    generation_max_length=12, per_device_eval_batch_size=5, **QUIET)
    trainer = Seq2SeqTrainer(model=model, args=args, processing_class=tokenizer, compute_metrics=compute_metrics,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
    result = trainer.evaluate(toy_pairs)
    assert set(result) >= {"eval_loss", "eval_exact"}
    assert seen["preds"].dtype.kind == "i" and seen["preds"].shape == (11, 12)
    assert seen["labels"].shape[0] == 11 and (seen["labels"] == -100).any()


def test_seq2seq_decoder_only_generation(tokenizer, tmp_path):
    """A decoder-only model generates from left-padded prompts; predictions hold only the new tokens."""
    from datasets import Dataset
    model = tiny_llama(50)
    model.generation_config.pad_token_id = 0
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    ds = Dataset.from_dict({"input_ids": prompts, "attention_mask": [[1] * len(p) for p in prompts]})
    tokenizer_left = type(tokenizer).from_pretrained(tokenizer.name_or_path, padding_side="left")
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True,
                                    per_device_eval_batch_size=4, **QUIET)
    trainer = Seq2SeqTrainer(model=model, args=args, processing_class=tokenizer_left)
    out = trainer.predict(ds, max_new_tokens=4)
    assert out.predictions.shape == (4, 4) and out.label_ids is None
    model.eval()
    for i, p in enumerate(prompts):
        ids = torch.tensor([p])
        single = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                do_sample=False)[0, len(p):].tolist()
        assert out.predictions[i].tolist() == single


def test_seq2seq_training_arguments(tmp_path):
    from transformers import GenerationConfig
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True, generation_max_length=64,
                                    generation_num_beams=4, sortish_sampler=True,
                                    generation_config=GenerationConfig(max_new_tokens=7, num_beams=2))
    assert isinstance(args, TrainingArguments)
    assert args.train_sampling_strategy == "group_by_length"
    data = json.loads(args.to_json_string())
    assert data["predict_with_generate"] is True and data["generation_max_length"] == 64
    assert data["generation_config"]["max_new_tokens"] == 7  # a GenerationConfig is written as a dict
    again = Seq2SeqTrainingArguments.from_dict(data)
    assert again.generation_num_beams == 4 and again.generation_config["num_beams"] == 2
    path = tmp_path / "args.json"
    args.save_to_json(str(path))
    assert Seq2SeqTrainingArguments.from_json_file(str(path)).predict_with_generate is True

    # the base class's alias handling and unknown-name checks still apply, for both classes
    with pytest.warns(FutureWarning):
        old = Seq2SeqTrainingArguments(output_dir=str(tmp_path), evaluation_strategy="epoch",
                                       predict_with_generate=True)
    assert old.eval_strategy == "epoch" and old.predict_with_generate
    with pytest.raises(ConfigError, match="predict_with_generate"):
        Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generat=True)
    with pytest.raises(ConfigError, match="unknown argument 'predict_with_generate'"):
        TrainingArguments(output_dir=str(tmp_path), predict_with_generate=True)
    with pytest.raises(ConfigError, match="generation_num_beams"):
        Seq2SeqTrainingArguments(output_dir=str(tmp_path), generation_num_beams=0)
    with pytest.raises(ConfigError, match="not supported"):
        Seq2SeqTrainingArguments(output_dir=str(tmp_path), use_liger_kernel=True)


def test_seq2seq_generation_config_from_dict_and_path(tokenizer, toy_pairs, tmp_path):
    from transformers import GenerationConfig
    model = tiny_bart(tokenizer, 50)
    GenerationConfig(decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, max_new_tokens=3).save_pretrained(
        str(tmp_path / "gen"))
    for source in ({"decoder_start_token_id": 1, "pad_token_id": 0, "eos_token_id": 2, "max_new_tokens": 3},
                   str(tmp_path / "gen"), str(tmp_path / "gen" / "generation_config.json")):
        args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True,
                                        generation_config=source, **QUIET)
        trainer = Seq2SeqTrainer(model=model, args=args, processing_class=tokenizer,
                                 data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
        assert model.generation_config.max_new_tokens == 3
        assert trainer.predict(toy_pairs).predictions.shape == (11, 4)
    made = Seq2SeqTrainer(model_init=lambda: tiny_bart(tokenizer, 50), args=args, processing_class=tokenizer)
    assert made.model.generation_config.max_new_tokens == 3  # model_init models get it too
    with pytest.raises(ConfigError, match="generation_config"):
        Seq2SeqTrainer(model=model, processing_class=tokenizer,
                       args=Seq2SeqTrainingArguments(output_dir=str(tmp_path), predict_with_generate=True,
                                                     generation_config=str(tmp_path / "missing"), **QUIET))
