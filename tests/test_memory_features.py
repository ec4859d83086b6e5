"""NEFTune (neftune_noise_alpha) and activation checkpointing (activation_checkpointing / gradient_checkpointing):
noise in training only and gone after train(); checkpointing on under both names, with less kept for the backward
and the same gradients, with and without a LoRA adapter."""
from __future__ import annotations

import copy

import pytest
import torch

from memory_support import causal_batch, saved_tensor_bytes, shakespeare_lm_dataset, tiny_causal_lm
from trainwright import (
    ConfigError,
    DataCollatorForLanguageModeling,
    ModelError,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)


def _args(tmp_path, name="out", **kw):
    kw.setdefault("report_to", "none")
    kw.setdefault("save_strategy", "no")
    return TrainingArguments(str(tmp_path / name), use_cpu=True, disable_tqdm=True, **kw)


def _decoder_layers(model):
    from transformers.modeling_layers import GradientCheckpointingLayer
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


# ====================================================================== NEFTune
def test_neftune_noise_is_transformers_noise():
    """Same RNG state: our hook's output equals transformers' neftune_post_forward_hook bit for bit; no noise in
    eval mode."""
    from transformers.integrations.neftune import neftune_post_forward_hook

    from trainwright.neftune import neftune_hook
    emb = torch.nn.Embedding(50, 16)
    emb.neftune_noise_alpha = 5.0
    ids = torch.randint(0, 50, (3, 11))
    clean = emb(ids)
    torch.manual_seed(7)
    ours = neftune_hook(emb, (ids,), clean)
    torch.manual_seed(7)
    theirs = neftune_post_forward_hook(emb, (ids,), clean)
    assert torch.equal(ours, theirs) and not torch.equal(ours, clean)
    assert (ours - clean).abs().max() <= 5.0 / (11 * 16) ** 0.5
    emb.eval()
    assert torch.equal(neftune_hook(emb, (ids,), clean), clean)


class _EmbeddingSpy(TrainerCallback):
    """From on_train_begin (after NEFTune's hook is added): per mode (training or not), the largest
    |output - clean embedding| x sqrt(seq_len x hidden), which NEFTune bounds by alpha."""

    def __init__(self):
        self.noise = {True: 0.0, False: 0.0}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        emb = model.get_input_embeddings()

        def spy(module, inputs, output):
            with torch.no_grad():
                clean = torch.nn.functional.embedding(inputs[0], module.weight)
                scaled = float((output - clean).abs().max()) * (output.shape[1] * output.shape[2]) ** 0.5
            self.noise[module.training] = max(self.noise[module.training], scaled)
        self.handle = emb.register_forward_hook(spy)

    def on_train_end(self, args, state, control, **kwargs):
        self.handle.remove()


@pytest.mark.slow
def test_neftune_changes_training_only_and_is_removed_after_train(tokenizer, tmp_path):
    data = shakespeare_lm_dataset(tokenizer, n=32)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    results = {}
    for alpha in (None, 5.0):
        model = tiny_causal_lm("llama", vocab_size=tokenizer.vocab_size)
        spy = _EmbeddingSpy()
        trainer = Trainer(model=model, args=_args(tmp_path, f"a{alpha}", neftune_noise_alpha=alpha, max_steps=4,
                                                  per_device_train_batch_size=8, logging_steps=1, learning_rate=1e-3,
                                                  eval_strategy="steps", eval_steps=2),
                          train_dataset=data, eval_dataset=data.select(range(16)), data_collator=collator,
                          callbacks=[spy])
        before = trainer.evaluate()["eval_loss"]
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        emb = model.get_input_embeddings()
        assert not emb._forward_hooks and not hasattr(emb, "neftune_noise_alpha")  # gone after train()
        after = trainer.evaluate()["eval_loss"]
        plain = Trainer(model=model, args=_args(tmp_path, "plain"), eval_dataset=data.select(range(16)),
                        data_collator=collator).evaluate()["eval_loss"]
        results[alpha] = (before, losses, after, plain, spy)
    (b0, l0, _, _, spy0), (b1, l1, after1, plain1, spy1) = results[None], results[5.0]
    assert b1 == b0  # evaluation before training: identical with and without NEFTune
    assert l1[0] != l0[0]  # the first step's loss already sees the noise
    assert after1 == plain1  # after train() the model evaluates as a model that never had NEFTune
    assert spy0.noise == {True: 0.0, False: 0.0}
    assert spy1.noise[False] == 0.0  # evaluation during training: no noise
    assert 4.0 < spy1.noise[True] <= 5.0 * 1.0001  # uniform in [-5 / sqrt(L d), 5 / sqrt(L d)]: the max is close


def test_neftune_hooks_the_base_embeddings_of_a_lora_model(tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_causal_lm("llama", vocab_size=300),
                                peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    base_emb = model.base_model.model.get_input_embeddings()
    seen = []

    class Check(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append((len(base_emb._forward_hooks), getattr(base_emb, "neftune_noise_alpha", None)))

    ids = torch.randint(0, 300, (8, 16))
    data = [{"input_ids": r, "labels": r} for r in ids]
    Trainer(model=model, args=_args(tmp_path, neftune_noise_alpha=3.0, max_steps=2, per_device_train_batch_size=4),
            train_dataset=data, callbacks=[Check()]).train()
    assert seen == [(1, 3.0), (1, 3.0)]
    assert not base_emb._forward_hooks and not hasattr(base_emb, "neftune_noise_alpha")


def test_neftune_argument_is_accepted_and_checked(tmp_path):
    assert TrainingArguments(str(tmp_path), neftune_noise_alpha=5.0).neftune_noise_alpha == 5.0
    with pytest.raises(ConfigError, match="neftune_noise_alpha=-1"):
        Trainer(model=tiny_causal_lm("gpt2", vocab_size=64), args=_args(tmp_path, neftune_noise_alpha=-1))


class _NoEmbeddings(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x, labels=None):
        loss = torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)
        return {"loss": loss}


def _vector_data(n=8):
    return [{"x": torch.randn(4), "labels": torch.tensor(0.5)} for _ in range(n)]


def test_neftune_without_input_embeddings_fails_before_the_first_step(tmp_path):
    trainer = Trainer(model=_NoEmbeddings(), args=_args(tmp_path, neftune_noise_alpha=5.0, max_steps=1),
                      train_dataset=_vector_data())
    with pytest.raises(ModelError, match=r"neftune_noise_alpha.*_NoEmbeddings"):
        trainer.train()
    assert trainer.state.global_step == 0


# ====================================================================== activation checkpointing
@pytest.mark.parametrize("kwargs,expected_on", [
    ({"activation_checkpointing": True}, True),
    ({"gradient_checkpointing": True}, True),
    ({"activation_checkpointing": False, "gradient_checkpointing": True}, False),  # the new name wins
    ({}, False),
])
def test_both_names_turn_checkpointing_on(kwargs, expected_on, tmp_path):
    model = tiny_causal_lm("llama")
    trainer = Trainer(model=model, args=_args(tmp_path, **kwargs))
    trainer._set_up_model_for_training()
    assert model.is_activation_checkpointing == expected_on
    if expected_on:  # transformers' default checkpoint arguments
        assert all(m._gradient_checkpointing_func.keywords == {"use_reentrant": False} for m in _decoder_layers(model))


def test_checkpointing_kwargs_reach_torch_checkpoint(tmp_path):
    model = tiny_causal_lm("llama", layers=4)
    trainer = Trainer(model=model, args=_args(tmp_path, gradient_checkpointing=True, gradient_checkpointing_kwargs={
        "use_reentrant": True, "every_n_layers": 2}))
    trainer._set_up_model_for_training()
    layers = _decoder_layers(model)
    assert [m.gradient_checkpointing for m in layers] == [True, False, True, False]
    assert layers[0]._gradient_checkpointing_func.keywords == {"use_reentrant": True}


def _kept_and_grads(model, tmp_path, inputs, **kw):
    trainer = Trainer(model=model, args=_args(tmp_path, **kw))
    trainer._set_up_model_for_training()
    model.train()
    kept, loss = saved_tensor_bytes(lambda: trainer.compute_loss(model, dict(inputs), num_items_in_batch=150.0),
                                    exclude=list(model.parameters()), layers=_decoder_layers(model))
    loss.backward()
    return kept, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_keeps_less_for_backward_with_the_same_gradients(reentrant, tmp_path):
    model = tiny_causal_lm("llama", vocab_size=256, hidden=64, layers=4)
    inputs = causal_batch(256, rows=4, length=48)
    kept0, loss0, grads0 = _kept_and_grads(copy.deepcopy(model), tmp_path, inputs)
    kept1, loss1, grads1 = _kept_and_grads(model, tmp_path, inputs, activation_checkpointing=True,
                                           activation_checkpointing_kwargs={"use_reentrant": reentrant})
    assert kept1 < kept0 / 2  # measured: 13% (the layer inputs are kept, their insides recomputed)
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-5)
    assert grads1.keys() == grads0.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_with_lora_keeps_less_and_trains_the_adapter(reentrant, tmp_path):
    """Frozen embeddings: the input grads are enabled, so even reentrant checkpointing reaches the adapter."""
    peft = pytest.importorskip("peft")
    base = tiny_causal_lm("llama", vocab_size=256, hidden=64, layers=4)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    inputs = causal_batch(256, rows=4, length=48)
    lora = peft.get_peft_model(base, config)  # once: the adapter's initialisation draws random numbers
    kept0, loss0, grads0 = _kept_and_grads(copy.deepcopy(lora), tmp_path, inputs)
    kept1, loss1, grads1 = _kept_and_grads(lora, tmp_path, inputs,
                                           gradient_checkpointing=True,
                                           gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert kept1 < kept0 / 2
    assert any("lora_A" in n for n in grads0) and grads1.keys() == grads0.keys()
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-5)
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-5)


def test_checkpointing_a_model_without_support_fails_before_the_first_step(tmp_path):
    trainer = Trainer(model=_NoEmbeddings(), args=_args(tmp_path, activation_checkpointing=True, max_steps=1),
                      train_dataset=_vector_data())
    with pytest.raises(ModelError, match=r"activation_checkpointing=True but _NoEmbeddings.*torch.utils.checkpoint"):
        trainer.train()
    assert trainer.state.global_step == 0


# ====================================================================== torch_empty_cache_steps
@pytest.mark.slow
def test_torch_empty_cache_steps_empties_the_cache_on_transformers_schedule(tokenizer, tmp_path, monkeypatch):
    """torch_empty_cache_steps=3: the device cache is emptied at the steps transformers empties it (global_step
    0, 3, 6, read before the step's increment), on the Trainer's device. The CPU has no cache to empty, so the
    schedule is what can be observed here; trained as without the argument."""
    import trainwright.train_step as train_step
    seen = []
    monkeypatch.setattr(train_step, "empty_device_cache", lambda device: seen.append((trainer.state.global_step,
                                                                                     device.type)))
    data = shakespeare_lm_dataset(tokenizer, n=32)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    losses = {}
    for steps in (None, 3):
        trainer = Trainer(model=tiny_causal_lm("llama", vocab_size=tokenizer.vocab_size),
                          args=_args(tmp_path, f"e{steps}", torch_empty_cache_steps=steps, max_steps=7,
                                     per_device_train_batch_size=4, logging_steps=1, learning_rate=1e-3),
                          train_dataset=data, data_collator=collator)
        trainer.train()
        losses[steps] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert seen == [(0, "cpu"), (3, "cpu"), (6, "cpu")]
    assert losses[3] == losses[None]
