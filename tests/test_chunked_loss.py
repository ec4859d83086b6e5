"""chunked_cross_entropy: the causal-LM loss without the (tokens x vocabulary) logits, exact against the plain loss
(values and gradients) for Llama, GPT-2 and Qwen2, with its memory figure; refusals name the model."""
from __future__ import annotations

import copy

import pytest
import torch

from memory_support import causal_batch, saved_tensor_bytes, shakespeare_lm_dataset, tiny_causal_lm
from trainwright import ConfigError, ModelError, Trainer, TrainingArguments
from trainwright.chunked_loss import chunk_size_for, linear_cross_entropy_sum

ARCHS = ["llama", "gpt2", "qwen2"]


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------ the chunked function alone
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_linear_cross_entropy_matches_torch(bias, chunk, smoothing):
    torch.manual_seed(0)
    n, hidden, vocab = 50, 16, 301
    h = torch.randn(n, hidden, requires_grad=True)
    head = torch.nn.Linear(hidden, vocab, bias=bias)
    targets = torch.randint(0, vocab, (n,))
    targets[::3] = -100
    targets[:8] = -100  # a whole chunk of ignored tokens (chunk 7, 1)
    params = [h, head.weight] + ([head.bias] if bias else [])
    ours = linear_cross_entropy_sum(h, head.weight, head.bias, targets, chunk, smoothing)
    ref = torch.nn.functional.cross_entropy(head(h), targets, ignore_index=-100, reduction="sum",
                                            label_smoothing=smoothing)
    close(ours, ref)
    for g, r in zip(torch.autograd.grad(ours, params), torch.autograd.grad(ref, params)):
        close(g, r)


def test_linear_cross_entropy_under_bf16_autocast_matches_the_autocast_head():
    """Each chunk's matmul runs in bf16 as the autocast lm_head does, the loss in fp32."""
    torch.manual_seed(0)
    h = torch.randn(40, 32, requires_grad=True)
    head = torch.nn.Linear(32, 257, bias=False)
    targets = torch.randint(0, 257, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy_sum(h, head.weight, None, targets, 16)
        ref = torch.nn.functional.cross_entropy(head(h).float(), targets, reduction="sum")
    assert ours.dtype == torch.float32
    close(ours, ref, tol=1e-4)  # the same bf16 logits, upcast: equal up to fp32 summation order
    for g, r in zip(torch.autograd.grad(ours, [h, head.weight]), torch.autograd.grad(ref, [h, head.weight])):
        close(g, r, tol=2e-2)  # bf16 products summed over chunks in fp32 (the plain matmul rounds once to bf16)


def test_automatic_chunk_size():
    assert chunk_size_for(True, 32_000) == 512
    assert chunk_size_for(True, 152_064) == 64
    assert chunk_size_for(True, 100) % 64 == 0
    assert chunk_size_for(300, 32_000) == 300


# ------------------------------------------------------------------------------ through the Trainer
def _trainer(model, tmp_path, **kw):
    args = TrainingArguments(str(tmp_path / "out"), report_to="none", use_cpu=True, disable_tqdm=True, **kw)
    return Trainer(model=model, args=args)


def _loss_and_grads(model, tmp_path, inputs, num_items, **kw):
    trainer = _trainer(model, tmp_path, **kw)
    trainer._set_up_model_for_training()
    model.train()
    loss = trainer.compute_loss(model, dict(inputs), num_items_in_batch=num_items)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_items", [None, 53.0])
def test_trainer_loss_and_gradients_equal_the_plain_loss(arch, num_items, tmp_path):
    model = tiny_causal_lm(arch, vocab_size=1000)
    inputs = causal_batch(1000)
    plain_loss, plain_grads = _loss_and_grads(copy.deepcopy(model), tmp_path, inputs, num_items)
    loss, grads = _loss_and_grads(model, tmp_path, inputs, num_items, chunked_cross_entropy=7)
    close(loss, plain_loss)
    assert plain_grads.keys() == grads.keys()
    for name in grads:
        close(grads[name], plain_grads[name])
    head = model.get_output_embeddings()
    assert "forward" not in head.__dict__  # the head is itself again after the step
    tied = head.weight is model.get_input_embeddings().weight
    assert tied == (arch != "llama")


def test_label_smoothing_in_chunks_equals_the_plain_smoothed_loss(tmp_path):
    model = tiny_causal_lm("llama", vocab_size=700)
    inputs = causal_batch(700)
    plain_loss, plain_grads = _loss_and_grads(copy.deepcopy(model), tmp_path, inputs, 41.0, label_smoothing_factor=0.1)
    loss, grads = _loss_and_grads(model, tmp_path, inputs, 41.0, label_smoothing_factor=0.1, chunked_cross_entropy=True)
    close(loss, plain_loss)
    for name in grads:
        close(grads[name], plain_grads[name])


@pytest.mark.slow
def test_training_with_chunked_loss_follows_the_plain_run(tokenizer, tmp_path):
    """Real text, MiniLM's 30k vocabulary, 6 steps with 2-step accumulation: the same losses and weights;
    evaluate() (full logits) and generate() work on the model afterwards."""
    from trainwright import DataCollatorForLanguageModeling
    data = shakespeare_lm_dataset(tokenizer, n=48)
    runs = {}
    for chunked in (False, True):
        model = tiny_causal_lm("llama", vocab_size=tokenizer.vocab_size, hidden=32)
        args = TrainingArguments(str(tmp_path / f"c{chunked}"), per_device_train_batch_size=4,
                                 gradient_accumulation_steps=2, max_steps=6, learning_rate=3e-3, logging_steps=1,
                                 save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                                 chunked_cross_entropy=chunked, train_sampling_strategy="random")
        trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data.select(range(16)),
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        runs[chunked] = (losses, trainer.evaluate()["eval_loss"], model)
    assert runs[True][0] == pytest.approx(runs[False][0], abs=2e-4)  # logged losses are rounded to 4 digits
    assert runs[True][0][-1] < runs[True][0][0]
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-4)
    for a, b in zip(runs[True][2].parameters(), runs[False][2].parameters()):
        close(a, b, tol=1e-4)
    out = runs[True][2].generate(torch.tensor([[101, 2023]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 5)


# ------------------------------------------------------------------------------ memory
def test_saved_for_backward_bytes_per_token_far_below_the_vocabulary(tmp_path, capsys):
    """The loss part: the plain head + cross-entropy keeps (tokens x vocab) fp32 logits for the backward;
    the chunked one keeps per token the target id and one float (the hidden states are kept by both)."""
    torch.manual_seed(0)
    tokens, hidden, vocab = 1024, 64, 8192
    h = torch.randn(tokens, hidden, requires_grad=True)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    targets = torch.randint(0, vocab, (tokens,))
    keep = [h, head.weight]
    plain, loss = saved_tensor_bytes(
        lambda: torch.nn.functional.cross_entropy(head(h), targets, reduction="sum"), exclude=keep)
    loss.backward()
    chunked, loss = saved_tensor_bytes(lambda: linear_cross_entropy_sum(h, head.weight, None, targets, 256),
                                       exclude=keep)
    loss.backward()
    with capsys.disabled():
        print(f"\nsaved for backward per token, vocab {vocab}: plain {plain / tokens:,.0f} B, "
              f"chunked {chunked / tokens:,.0f} B")
    assert plain / tokens >= vocab * 4  # the fp32 logits (log-softmax output)
    assert chunked / tokens <= 16  # int64 target + fp32 logsumexp


def test_whole_model_saves_less_than_the_logits_it_no_longer_keeps(tmp_path):
    vocab = 4096
    inputs = causal_batch(vocab, rows=4, length=64)
    tokens = inputs["input_ids"].numel()
    measured = {}
    for chunked in (False, True):
        model = tiny_causal_lm("llama", vocab_size=vocab)
        trainer = _trainer(model, tmp_path, chunked_cross_entropy=chunked)
        trainer._set_up_model_for_training()
        model.train()
        measured[chunked], loss = saved_tensor_bytes(
            lambda trainer=trainer, model=model: trainer.compute_loss(model, dict(inputs), num_items_in_batch=100.0),
            exclude=list(model.parameters()))
        loss.backward()
    # the fp32 logits are gone (the chunked loss keeps a target id and a float per token instead)
    assert measured[False] - measured[True] >= tokens * (vocab * 4 - 16)
    assert measured[True] < measured[False] / 3  # with a 4k vocabulary the logits were 3/4 of what was kept


# ------------------------------------------------------------------------------ refusals, before the first step
def _train_raises(model, tmp_path, exc, match, **kw):
    ids = torch.randint(0, 100, (8, 12))
    data = [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": r} for r in ids]
    args = TrainingArguments(str(tmp_path / "out"), max_steps=2, report_to="none", use_cpu=True, disable_tqdm=True,
                             save_strategy="no", per_device_train_batch_size=4, **kw)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    with pytest.raises(exc, match=match):
        trainer.train()
    assert trainer.state.global_step == 0


def test_soft_capped_logits_are_refused_naming_the_model(tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM
    model = Gemma2ForCausalLM(Gemma2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    _train_raises(model, tmp_path, ModelError, r"Gemma2ForCausalLM.*final_logit_softcapping",
                  chunked_cross_entropy=True)


def test_logits_changed_after_the_head_are_found_by_the_probe(tmp_path):
    from transformers import LlamaForCausalLM

    class ScaledLlama(LlamaForCausalLM):
        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
            out = super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
            out.logits = out.logits * 0.5
            return out

    model = ScaledLlama(tiny_causal_lm("llama", vocab_size=128).config)
    _train_raises(model, tmp_path, ModelError, r"ScaledLlama.*not its output embedding's output",
                  chunked_cross_entropy=True)


def test_not_a_causal_lm_is_refused(make_tiny_model, tmp_path):
    ids = torch.randint(0, 100, (8, 12))
    data = [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": 1} for r in ids]
    args = TrainingArguments(str(tmp_path / "out"), max_steps=1, report_to="none", use_cpu=True,
                             disable_tqdm=True, save_strategy="no", chunked_cross_entropy=True)
    trainer = Trainer(model=make_tiny_model(), args=args, train_dataset=data)
    with pytest.raises(ModelError, match=r"BertForSequenceClassification is not one.*chunked_cross_entropy=False"):
        trainer.train()


@pytest.mark.parametrize("value", [0, -5, 2.5, "yes"])
def test_bad_chunk_setting_is_refused(value, tmp_path):
    with pytest.raises(ConfigError, match="chunked_cross_entropy="):  # when the arguments are built
        TrainingArguments(str(tmp_path / "out"), chunked_cross_entropy=value)


def test_compute_loss_func_with_chunking_is_refused(tmp_path):
    ids = torch.randint(0, 100, (4, 12))
    data = [{"input_ids": r, "labels": r} for r in ids]
    args = TrainingArguments(str(tmp_path / "out"), max_steps=1, report_to="none", use_cpu=True,
                             disable_tqdm=True, save_strategy="no", chunked_cross_entropy=True)
    trainer = Trainer(model=tiny_causal_lm("gpt2", vocab_size=128), args=args, train_dataset=data,
                      compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.logits.sum())
    with pytest.raises(ConfigError, match="compute_loss_func"):
        trainer.train()


def test_chunked_loss_with_a_lora_model(tmp_path):
    peft = pytest.importorskip("peft")
    model = tiny_causal_lm("llama", vocab_size=600)
    lora = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                     task_type="CAUSAL_LM"))
    plain = copy.deepcopy(lora)
    inputs = causal_batch(600)
    plain_loss, plain_grads = _loss_and_grads(plain, tmp_path, inputs, 40.0)
    loss, grads = _loss_and_grads(lora, tmp_path, inputs, 40.0, chunked_cross_entropy=True)
    close(loss, plain_loss)
    assert any("lora_A" in n for n in grads)
    for name in grads:
        close(grads[name], plain_grads[name])


@pytest.mark.torchrun
@pytest.mark.slow
def test_chunked_loss_under_ddp_and_fsdp2_reaches_the_single_process_weights(tmp_path):
    """torchrun, 2 ranks x 4 rows with chunked_cross_entropy (DDP: Llama; FSDP2: GPT-2 with its tied head) against
    one process with batch 8 and the plain loss."""
    from safetensors.torch import load_file
    test_distributed = pytest.importorskip("test_distributed")
    if not test_distributed.TORCHRUN.exists() or not torch.distributed.is_available():
        pytest.skip("needs torch.distributed and torchrun")
    import chunked_checks as script
    launch = test_distributed.Launch("chunked", "chunked_checks.py", tmp_path, log_dir=tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same matmuls
    try:
        reference = {}
        for mode, arch in (("ddp", "llama"), ("fsdp", "gpt2")):
            trainer = Trainer(model=script.model(arch), args=script.args(str(tmp_path / f"single_{mode}"),
                                                                         per_device_train_batch_size=8),
                              train_dataset=script.data())
            trainer.train()
            reference[mode] = ({k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                               [h["loss"] for h in trainer.state.log_history if "loss" in h])
    finally:
        torch.set_num_threads(threads)
    launch.wait()
    launch.check()
    import json
    for mode in ("ddp", "fsdp"):
        saved = load_file(str(tmp_path / mode / "model.safetensors"))
        logs = json.loads((tmp_path / mode / "logs.json").read_text())
        assert logs["wrapped"] == ("DistributedDataParallel" if mode == "ddp" else "FSDPGPT2LMHeadModel")
        state, losses = reference[mode]
        assert [loss for _, loss in logs["logs"]] == pytest.approx(losses, abs=2e-4)
        for name, tensor in saved.items():
            close(tensor, state[name], tol=2e-5)
