"""The trainer of ``task: instruction``: a :class:`~trainwright.seq2seq.Seq2SeqTrainer` whose evaluation batches
(prompt + answer rows, the prompt's labels -100) are scored twice: the loss of the answers on the whole rows, and
greedy generation from the prompts alone (cut at the first labelled token, left-padded), returned with the
answers' token ids so that ``compute_metrics`` compares them."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...seq2seq import Seq2SeqTrainer

_TRAINER = None


def instruction_trainer() -> type[Seq2SeqTrainer]:
    global _TRAINER
    if _TRAINER is None:
        _TRAINER = _build()
    return _TRAINER


def _build():
    import torch

    from ...distributed import unwrap_model
    from ...seq2seq import Seq2SeqTrainer

    class InstructionTrainer(Seq2SeqTrainer):
        def load_generation_config(self, gen_config_arg):
            """A mapping (``generation_config: {max_new_tokens: 8}``) updates the model's own generation config
            (its eos and pad ids stay); set on the base model too when the model is a peft model."""
            if not isinstance(gen_config_arg, Mapping):
                return Seq2SeqTrainer.load_generation_config(gen_config_arg)
            model = unwrap_model(self.model)
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            current = getattr(base, "generation_config", None)
            if current is None:
                return Seq2SeqTrainer.load_generation_config(gen_config_arg)
            config = copy.deepcopy(current)
            config.update(**dict(gen_config_arg))
            base.generation_config = config
            return config

        def _resolve_gen_kwargs(self, gen_kwargs):
            gen_kwargs = super()._resolve_gen_kwargs(gen_kwargs)
            gen_config = getattr(self.args, "generation_config", None)
            if isinstance(gen_config, Mapping) and gen_kwargs.get("max_length") is None:
                for key in ("max_new_tokens", "do_sample"):
                    if gen_config.get(key) is not None:
                        gen_kwargs.setdefault(key, gen_config[key])
            return gen_kwargs

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
            labels = inputs.get("labels")
            if not getattr(self.args, "predict_with_generate", False) or prediction_loss_only \
                    or not isinstance(labels, torch.Tensor) or not isinstance(inputs.get("input_ids"), torch.Tensor) \
                    or labels.shape != inputs["input_ids"].shape:
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)
            inputs = self._prepare_inputs(inputs)
            loss = self._generation_loss(model, inputs, encoder_decoder=False)
            prompts, answers = _split(inputs["input_ids"], inputs["labels"], inputs.get("attention_mask"),
                                      self._pad_token_id())
            _, generated, _ = super().prediction_step(model, prompts, False, ignore_keys, **gen_kwargs)
            if self.args.prediction_loss_only:
                return loss, None, None
            return loss, generated, answers

    return InstructionTrainer


def _split(ids, labels, mask, pad_id):
    """(left-padded prompts: the tokens before the first labelled one, the labelled tokens left-aligned)."""
    import torch
    labelled = labels != -100
    if mask is not None:
        labelled &= mask.bool()
    has = labelled.any(dim=1)
    first = torch.where(has, labelled.int().argmax(dim=1), (mask.sum(dim=1) if mask is not None else
                                                             torch.full_like(has, ids.shape[1], dtype=torch.long)))
    first = first.clamp(min=1)  # generation needs at least one prompt token
    width = int(first.max())
    prompt_ids = torch.full((ids.shape[0], width), pad_id, dtype=ids.dtype, device=ids.device)
    prompt_mask = torch.zeros((ids.shape[0], width), dtype=torch.long, device=ids.device)
    answer_width = max(1, int(labelled.sum(dim=1).max()))
    answers = torch.full((ids.shape[0], answer_width), -100, dtype=labels.dtype, device=labels.device)
    for i in range(ids.shape[0]):
        n = int(first[i])
        prompt_ids[i, width - n:] = ids[i, :n]
        prompt_mask[i, width - n:] = 1
        row = labels[i][labelled[i]]
        answers[i, :row.numel()] = row
    return {"input_ids": prompt_ids, "attention_mask": prompt_mask}, answers
