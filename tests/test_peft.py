"""PEFT models in the Trainer (issue 16): adapter-only checkpoints (and their size against a full one), bit-identical
resume for LoRA, IA3, prompt and prefix tuning, the best adapter restored at the end, save_model that
PeftModel.from_pretrained loads, resuming transformers' adapter checkpoints, DDP and FSDP2 under torchrun, and the
message for a 4/8-bit (bitsandbytes) base on a machine that cannot train it."""
from __future__ import annotations

import json
import os
import types

import pytest
import torch

from conftest import StopAt
from memory_support import tiny_causal_lm
from trainwright import CheckpointError, ModelError, Trainer, TrainingArguments

peft = pytest.importorskip("peft")

VOCAB = 300


def _data(rows=48, length=16, seed=0):
    from datasets import Dataset
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (rows, length), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


CONFIGS = {
    "lora": lambda: peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                                    modules_to_save=["lm_head"], task_type="CAUSAL_LM"),
    "ia3": lambda: peft.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                                  task_type="CAUSAL_LM"),
    "prompt_tuning": lambda: peft.PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
    # peft saves prefix tuning's projected prefix, not the projection: the projection goes to the extra file
    "prefix_projection": lambda: peft.PrefixTuningConfig(num_virtual_tokens=4, prefix_projection=True,
                                                         encoder_hidden_size=16, task_type="CAUSAL_LM"),
}


def _base(seed=0, **kw):
    return tiny_causal_lm("llama", vocab_size=VOCAB, seed=seed, **kw)


def _peft_model(method="lora", seed=0, **kw):
    base = _base(seed, **kw)
    torch.manual_seed(1)  # the adapter's initialisation
    return peft.get_peft_model(base, CONFIGS[method]())


def _args(out, **kw):
    base = dict(output_dir=str(out), max_steps=9, per_device_train_batch_size=4, save_steps=4, logging_steps=1,
                learning_rate=1e-2, report_to="none", disable_tqdm=True, write_report=False, seed=3)
    base.update(kw)
    return TrainingArguments(**base)


def _train(out, method="lora", resume=None, callbacks=None, data=None, **kw):
    trainer = Trainer(_peft_model(method), _args(out, **kw), train_dataset=data or _data(), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _assert_identical(a: Trainer, b: Trainer):
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), n
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][name]), torch.as_tensor(sb[k][name])), (k, name)


def _trainable(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _dir_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# ====================================================================== checkpoints and resume
def test_lora_checkpoint_holds_the_adapter_and_resume_is_bit_identical(tmp_path):
    """LoRA (dropout on, lm_head in modules_to_save) stopped mid-epoch at step 5 and resumed: weights and optimizer
    state bit-identical to the straight run; the checkpoint holds the adapter and the trainable parameters'
    optimizer state only."""
    full = _train(tmp_path / "full")
    _train(tmp_path / "cut", callbacks=[StopAt(5)])
    ckpt = tmp_path / "cut" / "checkpoint-5"
    files = sorted(os.listdir(ckpt))
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert not [f for f in files if f.startswith("model") or f.endswith((".bin", ".pt", ".pth"))]
    from safetensors.torch import load_file
    saved = load_file(str(ckpt / "adapter_model.safetensors"))
    trainable = _trainable(full.model)
    assert len(saved) == len(trainable) == 9  # 2 layers x (q, v) x (A, B) + the lm_head copy
    assert not any("base_layer" in k or "embed_tokens" in k for k in saved)
    optimizer = json.loads((ckpt / "optimizer.json").read_text())["state_dict"]
    assert len(optimizer["state"]["__int_keys__"]) == len(trainable)  # moments of the trainable parameters only
    resumed = _train(tmp_path / "cut", resume=True)
    assert resumed.state.global_step == 9
    _assert_identical(full, resumed)
    assert [h["loss"] for h in resumed.state.log_history if "loss" in h] == \
        [h["loss"] for h in full.state.log_history if "loss" in h]


@pytest.mark.parametrize("method", ["ia3", "prompt_tuning", "prefix_projection"])
def test_other_peft_methods_resume_bit_identical(tmp_path, method):
    full = _train(tmp_path / "full", method, max_steps=6, save_steps=3)
    _train(tmp_path / "cut", method, callbacks=[StopAt(3)], max_steps=6, save_steps=3)
    manifest = json.loads((tmp_path / "cut" / "checkpoint-3" / "trainwright_checkpoint.json").read_text())["model"]
    assert manifest["format"] == "peft"
    # what peft does not save as it is (prefix tuning's projection) is kept beside the adapter
    assert bool(manifest["trainable"]) == (method == "prefix_projection")
    resumed = _train(tmp_path / "cut", method, resume=True, max_steps=6, save_steps=3)
    _assert_identical(full, resumed)


def test_adapter_checkpoint_size_against_a_full_checkpoint(tmp_path):
    """The same Llama (hidden 128, 4 layers, 8k vocabulary) fine-tuned fully and with LoRA r=8 on q/v: the adapter
    checkpoint is a small fraction of the full one (figures in docs/peft.md)."""
    data = _data(rows=8)
    kw = dict(hidden=128, layers=4, vocab_size=8192)
    lora = peft.get_peft_model(tiny_causal_lm("llama", **kw),
                               peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    sizes = {}
    for name, model in (("full", tiny_causal_lm("llama", **kw)), ("lora", lora)):
        Trainer(model, _args(tmp_path / name, max_steps=1, save_steps=1), train_dataset=data).train()
        sizes[name] = _dir_bytes(tmp_path / name / "checkpoint-1")
    print(f"checkpoint sizes: full {sizes['full'] / 1e6:.2f} MB, LoRA {sizes['lora'] / 1e6:.3f} MB "
          f"({100 * sizes['lora'] / sizes['full']:.1f}%)")
    assert sizes["lora"] < 0.05 * sizes["full"]


def test_a_checkpoint_refuses_another_adapter_and_names_it(tmp_path):
    _train(tmp_path / "cut", callbacks=[StopAt(4)])
    other = peft.get_peft_model(_base(), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                         modules_to_save=["lm_head"], task_type="CAUSAL_LM"))
    trainer = Trainer(other, _args(tmp_path / "cut"), train_dataset=_data())
    with pytest.raises(CheckpointError, match=r"lora_A\.default\.weight \(4, 32\) float32 in the checkpoint vs "
                                              r"\(2, 32\) float32 in the model"):
        trainer.train(resume_from_checkpoint=True)


# ====================================================================== best adapter, save_model
class _Scores:
    """compute_metrics giving 0.9 at the first evaluation and 0.1 after: the best checkpoint is the first."""

    def __init__(self):
        self.calls = 0

    def __call__(self, eval_pred):
        self.calls += 1
        return {"score": 0.9 if self.calls == 1 else 0.1}


def test_load_best_model_at_end_restores_the_best_adapter(tmp_path):
    args = _args(tmp_path, max_steps=6, eval_strategy="steps", eval_steps=2, save_steps=2, load_best_model_at_end=True,
                 metric_for_best_model="score", greater_is_better=True, per_device_eval_batch_size=8)
    trainer = Trainer(_peft_model(), args, train_dataset=_data(), eval_dataset=_data(rows=8, seed=1),
                      compute_metrics=_Scores())
    trainer.train()
    assert trainer.state.best_model_checkpoint == str(tmp_path / "checkpoint-2")
    best = peft.PeftModel.from_pretrained(_base(), str(tmp_path / "checkpoint-2"))
    last = peft.PeftModel.from_pretrained(_base(), str(tmp_path / "checkpoint-6"))
    got = _trainable(trainer.model)
    want = {n: p for n, p in best.named_parameters() if n in got}
    assert want.keys() == got.keys()
    assert all(torch.equal(got[n], want[n]) for n in got)
    assert not all(torch.equal(got[n], p) for n, p in last.named_parameters() if n in got)


def test_save_model_writes_an_adapter_that_peft_loads_with_equal_outputs(tmp_path, tokenizer):
    trainer = Trainer(_peft_model(), _args(tmp_path / "run", max_steps=3, save_strategy="no"), train_dataset=_data(),
                      processing_class=tokenizer)
    trainer.train()
    out = tmp_path / "model"
    trainer.save_model(str(out))
    files = set(os.listdir(out))
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= files
    assert not [f for f in files if f.startswith("model") or f == "trainwright_trainable.safetensors"]
    loaded = peft.PeftModel.from_pretrained(_base(), str(out)).eval()
    trainer.model.eval()
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, trainer.model(input_ids=ids).logits)
    # and trainwright's own loader puts the adapter back into a fresh PEFT model
    from trainwright.checkpoint import load_model_weights
    fresh = _peft_model(seed=0)
    load_model_weights(str(out), fresh)
    assert all(torch.equal(p, q) for (_, p), (_, q) in zip(fresh.named_parameters(), trainer.model.named_parameters()))


def test_resume_from_a_transformers_trainer_lora_checkpoint(tmp_path):
    """transformers.Trainer's checkpoint of a PEFT model holds adapter_model.safetensors (no model.safetensors):
    trainwright resumes from it, the adapter and the AdamW moments placed on their parameters."""
    import transformers
    hf_args = transformers.TrainingArguments(str(tmp_path), max_steps=3, save_steps=3, per_device_train_batch_size=4,
                                             learning_rate=1e-2, report_to="none", use_cpu=True, disable_tqdm=True)
    hf = transformers.Trainer(_peft_model(), hf_args, train_dataset=_data())
    hf.train()
    ckpt = tmp_path / "checkpoint-3"
    assert (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "model.safetensors").exists()
    from trainwright.checkpoint import load_model_weights
    fresh = _peft_model()
    load_model_weights(str(ckpt), fresh)  # the adapter of transformers' step 3, on its parameters
    got, want = _trainable(fresh), _trainable(hf.model)
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in got)
    trainer = Trainer(_peft_model(), _args(tmp_path, max_steps=4, save_strategy="no"), train_dataset=_data())
    trainer.train(resume_from_checkpoint=str(ckpt))
    assert trainer.state.global_step == 4


# ====================================================================== quantized bases
def _fake_quantized(model, *, bits=4, attrs=True, config=None):
    """A model carrying what transformers sets on a bitsandbytes model (no bitsandbytes here)."""
    target = model.get_base_model() if isinstance(model, peft.PeftModel) else model
    if attrs:
        setattr(target, f"is_loaded_in_{bits}bit", True)
    target.config.quantization_config = config or {"quant_method": "bitsandbytes", f"load_in_{bits}bit": True,
                                                   f"_load_in_{bits}bit": True}
    target.hf_quantizer = types.SimpleNamespace(quantization_config=target.config.quantization_config,
                                                is_trainable=True, is_qat_trainable=False)
    return model


@pytest.mark.parametrize("bits,attrs", [(4, True), (8, True), (4, False)], ids=["4bit", "8bit", "config-only"])
def test_a_bitsandbytes_base_on_a_machine_without_cuda_is_refused_when_the_trainer_is_built(tmp_path, bits, attrs,
                                                                                               monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = _fake_quantized(_peft_model(), bits=bits, attrs=attrs)
    with pytest.raises(ModelError) as info:
        Trainer(model, _args(tmp_path, use_cpu=True), train_dataset=_data())
    message = str(info.value)
    for phrase in (f"quantized to {bits}-bit with bitsandbytes", "needs a CUDA GPU and the bitsandbytes package",
                   "this machine has no CUDA GPU", "bitsandbytes package is not installed",
                   "without quantization_config"):
        assert phrase in message, (phrase, message)


def test_a_quantized_base_without_an_adapter_is_refused(tmp_path):
    model = _fake_quantized(_base(), attrs=False, config={"quant_method": "gptq", "bits": 4})
    with pytest.raises(ModelError, match=r"quantized \(gptq\) and has no trainable adapter.*get_peft_model"):
        Trainer(model, _args(tmp_path), train_dataset=_data())


def test_a_plain_model_is_not_taken_for_a_quantized_one(tmp_path):
    from trainwright.quantization import bitsandbytes_bits, quantization_method
    model = _peft_model()
    assert bitsandbytes_bits(model) is None and quantization_method(model) is None
    Trainer(model, _args(tmp_path), train_dataset=_data())


# ====================================================================== DDP and FSDP2
@pytest.mark.torchrun
@pytest.mark.slow
def test_lora_under_ddp_and_fsdp2_resumes_bit_identical_and_matches_one_process(tmp_path):
    """torchrun, 2 ranks x 4 rows, LoRA with lm_head in modules_to_save (tests/dist_scripts/peft_checks.py): under
    DDP and under FSDP2 the stopped-and-resumed run ends bit-identical to the straight one, checkpoints hold the
    adapter only, and the adapter is the one a single process reaches with batch 8."""
    from safetensors.torch import load_file
    test_distributed = pytest.importorskip("test_distributed")
    if not test_distributed.TORCHRUN.exists() or not torch.distributed.is_available():
        pytest.skip("needs torch.distributed and torchrun")
    import peft_checks as script
    launch = test_distributed.Launch("peft", "peft_checks.py", tmp_path, log_dir=tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same matmuls
    try:
        single = Trainer(script.model(), script.args(str(tmp_path / "single"), per_device_train_batch_size=8),
                         train_dataset=script.data())
        single.train()
        reference = {k: v.detach().clone() for k, v in single.model.state_dict().items()}
    finally:
        torch.set_num_threads(threads)
    launch.wait(timeout=400)
    launch.check()
    for mode in script.MODES:
        full, cut = tmp_path / mode / "full", tmp_path / mode / "cut"
        logs = json.loads((cut / "logs.json").read_text())
        assert logs["wrapped"] == ("DistributedDataParallel" if mode == "ddp" else "FSDPPeftModelForCausalLM")
        for rel in ("adapter_model.safetensors", "checkpoint-6/adapter_model.safetensors",
                    "checkpoint-6/optimizer.safetensors"):
            a, b = load_file(str(full / rel)), load_file(str(cut / rel))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (mode, rel)
        files = os.listdir(cut / "checkpoint-3")
        assert "adapter_model.safetensors" in files and not [f for f in files if f.startswith("model")]
        model = peft.PeftModel.from_pretrained(tiny_causal_lm("llama", vocab_size=script.VOCAB), str(full))
        for name, tensor in model.state_dict().items():
            if "lora_" in name or "modules_to_save" in name:
                assert torch.allclose(tensor, reference[name], atol=2e-5), (mode, name)
