"""Sequence-to-sequence training: ``Seq2SeqTrainingArguments`` and ``Seq2SeqTrainer``.

Same names, arguments and behaviour as ``transformers.Seq2SeqTrainingArguments`` / ``Seq2SeqTrainer``:
with ``predict_with_generate=True``, ``evaluate()`` and ``predict()`` call ``model.generate`` on every batch
and hand the generated token ids (not logits) to ``compute_metrics``, so BLEU / ROUGE can be computed;
``max_length`` / ``max_new_tokens`` / ``num_beams`` / any other ``generate`` argument may be passed to
``evaluate(**gen_kwargs)`` and ``predict(**gen_kwargs)``, and default to ``generation_max_length`` /
``generation_num_beams`` of the arguments.

Differences from transformers, all deliberate:

* generated ids are padded (with the tokenizer's pad id, like transformers) to the same width in every batch:
  ``max_length``, or ``max_new_tokens + 1`` for encoder-decoder models (decoder start token + new tokens). Only
  an explicitly passed ``max_length`` / ``max_new_tokens`` (or ``generation_max_length``) is used; otherwise the
  model's ``generation_config``. So ``predictions`` normally hold no -100.
* ``label_ids`` keep -100 at ignored positions: labels are padded with -100 (transformers pads them with the
  pad id). Replace -100 by the pad id before ``tokenizer.batch_decode`` as in every transformers example.
* decoder-only models: the prompt is cut from the generated ids, so ``predictions`` hold only the new tokens
  (transformers returns prompt + new tokens). Prompts must be left-padded (``tokenizer.padding_side = "left"``);
  a right-padded batch raises a warning. The loss is computed when the labels have the shape of ``input_ids``.
* ``sortish_sampler=True`` is accepted and means ``train_sampling_strategy="group_by_length"`` (batches of
  similar length, shuffled), which is what the sortish sampler was for.
"""
from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .args import TrainingArguments, _arg
from .args_compat import hf_types
from .distributed import unwrap_model
from .errors import ConfigError
from .trainer import Trainer

logger = logging.getLogger("trainwright")

__all__ = ["Seq2SeqTrainingArguments", "Seq2SeqTrainer"]


@dataclass(repr=False, init=False)  # TrainingArguments' own constructor handles these fields too
class Seq2SeqTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the generation settings used by :class:`Seq2SeqTrainer`.

    Args:
        sortish_sampler: accepted for compatibility; True sets ``train_sampling_strategy="group_by_length"``.
        predict_with_generate: evaluate/predict with ``model.generate`` (token ids to ``compute_metrics``)
            instead of returning logits.
        generation_max_length: ``max_length`` passed to ``generate`` at evaluation (unless ``evaluate()`` /
            ``predict()`` get ``max_length`` or ``max_new_tokens``).
        generation_num_beams: ``num_beams`` passed to ``generate`` at evaluation (unless given to the call).
        generation_config: a ``transformers.GenerationConfig``, a dict of its fields, or a path to a directory
            or ``generation_config.json`` file (local: trainwright works offline); it replaces the model's
            ``generation_config`` when the trainer is built. Serialised as a plain dict.
    """

    sortish_sampler: bool = _arg(False, "Batches of similar lengths (train_sampling_strategy='group_by_length').")
    predict_with_generate: bool = _arg(False,
                                       "Evaluate and predict with model.generate (token ids to compute_metrics).")
    generation_max_length: int | None = _arg(None, "max_length of generate at evaluation.")
    generation_num_beams: int | None = _arg(None, "num_beams of generate at evaluation.")
    generation_config: str | Path | hf_types.GenerationConfig | None = _arg(
        None, "A GenerationConfig, a dict of its fields, or a local generation_config.json (or its directory).")

    def _validate(self):
        if not isinstance(self.sortish_sampler, bool):
            raise ConfigError(f"sortish_sampler={self.sortish_sampler!r} must be True or False.")
        if self.sortish_sampler and getattr(self.train_sampling_strategy, "value",
                                            self.train_sampling_strategy) in ("auto", "random"):
            self.train_sampling_strategy = "group_by_length"
        super()._validate()
        if not isinstance(self.predict_with_generate, bool):
            raise ConfigError(f"predict_with_generate={self.predict_with_generate!r} must be True or False.")
        for name in ("generation_max_length", "generation_num_beams"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name}={value!r} must be a positive integer or None "
                                  f"(e.g. {name}={128 if 'length' in name else 4}).")
        gc = self.generation_config
        if gc is not None and not isinstance(gc, (str, os.PathLike, Mapping)) and not _is_generation_config(gc):
            raise ConfigError(f"generation_config must be a transformers.GenerationConfig, a dict of its fields or "
                              f"a path to a generation_config.json (or its directory), got {type(gc).__name__}.")
        if isinstance(gc, os.PathLike):
            self.generation_config = os.fspath(gc)


def _is_generation_config(obj) -> bool:
    return type(obj).__name__ == "GenerationConfig" and hasattr(obj, "to_dict")


class Seq2SeqTrainer(Trainer):
    """``Trainer`` whose evaluation can generate. Same constructor as :class:`trainwright.Trainer`.

    With ``args.predict_with_generate`` (a :class:`Seq2SeqTrainingArguments`), ``prediction_step`` runs
    ``model.generate(**inputs_without_labels, **gen_kwargs)`` and returns the generated ids as predictions; the
    loss is computed too when the batch has labels. Without it, it is the plain ``Trainer`` (logits).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        gen_config = getattr(self.args, "generation_config", None)
        if gen_config is not None:
            unwrap_model(self.model).generation_config = self.load_generation_config(gen_config)
        if getattr(self.args, "predict_with_generate", False) and not hasattr(unwrap_model(self.model), "generate"):
            raise ConfigError(f"predict_with_generate=True needs a model with a generate() method; "
                              f"{type(unwrap_model(self.model)).__name__} has none. Use a transformers "
                              "...ForConditionalGeneration / ...ForCausalLM model or set predict_with_generate=False.")

    def call_model_init(self, trial: Any = None) -> torch.nn.Module:
        """As ``Trainer.call_model_init``; the new model gets ``generation_config`` of the arguments."""
        model = super().call_model_init(trial)
        gen_config = getattr(self.args, "generation_config", None)
        if gen_config is not None and hasattr(model, "generation_config"):
            model.generation_config = self.load_generation_config(gen_config)  # also for models made at train()
        return model

    # ------------------------------------------------------------------ generation config
    @staticmethod
    def load_generation_config(gen_config_arg: Any) -> Any:
        """A ``GenerationConfig`` from a GenerationConfig (copied), a dict, or a local file / directory path."""
        from transformers import GenerationConfig
        if isinstance(gen_config_arg, GenerationConfig):
            gen_config = copy.deepcopy(gen_config_arg)
        elif isinstance(gen_config_arg, Mapping):
            gen_config = GenerationConfig.from_dict(dict(gen_config_arg))
        else:
            path = os.fspath(gen_config_arg)
            try:
                if os.path.isfile(path):
                    gen_config = GenerationConfig.from_pretrained(os.path.dirname(path) or ".",
                                                                  os.path.basename(path))
                else:
                    gen_config = GenerationConfig.from_pretrained(path)
            except (OSError, ValueError) as e:
                raise ConfigError(f"generation_config={path!r} could not be loaded ({e}). Give a directory holding "
                                  "generation_config.json, the path of such a file, a dict or a GenerationConfig."
                                  ) from e
        try:
            gen_config.validate(strict=True)
        except ValueError as e:
            raise ConfigError(f"generation_config is not valid: {e}") from e
        return gen_config

    # ------------------------------------------------------------------ evaluate / predict
    def _resolve_gen_kwargs(self, gen_kwargs: dict) -> dict:
        """The call's gen_kwargs, with generation_max_length / generation_num_beams of the arguments as defaults."""
        gen_kwargs = dict(gen_kwargs)
        max_length = getattr(self.args, "generation_max_length", None)
        num_beams = getattr(self.args, "generation_num_beams", None)
        if gen_kwargs.get("max_length") is None and gen_kwargs.get("max_new_tokens") is None and max_length is not None:
            gen_kwargs["max_length"] = max_length
        if gen_kwargs.get("num_beams") is None and num_beams is not None:
            gen_kwargs["num_beams"] = num_beams
        return gen_kwargs

    def _set_gen_kwargs(self, gen_kwargs: dict) -> None:
        self._gen_kwargs = self._resolve_gen_kwargs(gen_kwargs)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval", **gen_kwargs: Any) -> dict[str, float]:
        """As ``Trainer.evaluate``; ``gen_kwargs`` (``max_length``, ``max_new_tokens``, ``num_beams``, ...) go to
        ``model.generate`` when ``predict_with_generate`` is on."""
        self._set_gen_kwargs(gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None,
                metric_key_prefix: str = "test", **gen_kwargs: Any) -> Any:
        """As ``Trainer.predict``; with ``predict_with_generate`` the predictions are generated token ids
        ``[num_examples, width]`` in dataset order, padded with the pad id (see the module docstring)."""
        self._set_gen_kwargs(gen_kwargs)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    # ------------------------------------------------------------------ one batch
    def prediction_step(self, model: torch.nn.Module, inputs: dict, prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None, **gen_kwargs: Any) -> tuple:
        """As ``Trainer.prediction_step``; with ``predict_with_generate``: ``(loss, generated ids, labels)``, the
        ids padded to one width per evaluation (``gen_kwargs`` default to those of the running evaluate/predict)."""
        if not getattr(self.args, "predict_with_generate", False) or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only=prediction_loss_only,
                                           ignore_keys=ignore_keys)
        has_labels = bool(self.label_names) and all(inputs.get(k) is not None for k in self.label_names)
        inputs = self._prepare_inputs(inputs)
        gen_model = unwrap_model(self.model)
        encoder_decoder = bool(getattr(getattr(gen_model, "config", None), "is_encoder_decoder", False))
        generation_inputs, gen_kwargs, prompt_len = self._generation_request(inputs, has_labels, gen_kwargs,
                                                                             encoder_decoder)
        with torch.no_grad(), self.precision.autocast(evaluating=True):
            generated = gen_model.generate(**generation_inputs, **gen_kwargs)
        if not isinstance(generated, torch.Tensor):  # return_dict_in_generate=True
            generated = generated["sequences"] if isinstance(generated, Mapping) else generated.sequences
        if prompt_len:
            generated = generated[:, prompt_len:]
        generated = self._pad_tensors_to_max_len(generated, self._generation_width(gen_model, gen_kwargs,
                                                                                  encoder_decoder))
        loss = self._generation_loss(model, inputs, encoder_decoder) if has_labels else None
        self._has_labels_seen = getattr(self, "_has_labels_seen", False) or loss is not None
        if self.args.prediction_loss_only:
            return loss, None, None
        labels = None
        if has_labels:
            labels = tuple(inputs[name] for name in self.label_names)
            labels = labels[0] if len(labels) == 1 else labels
            if isinstance(labels, torch.Tensor) and labels.dim() == 2 and labels.shape[-1] < generated.shape[-1]:
                labels = torch.nn.functional.pad(labels, (0, generated.shape[-1] - labels.shape[-1]), value=-100)
        return loss, generated.detach(), labels

    def _generation_request(self, inputs: dict, has_labels: bool, gen_kwargs: dict, encoder_decoder: bool):
        """(the inputs of ``generate``, its keyword arguments, the prompt length to cut from decoder-only output)."""
        if not gen_kwargs:  # those of the running evaluate()/predict(); else (evaluation_loop called directly) args
            stored = getattr(self, "_gen_kwargs", None)
            gen_kwargs = dict(stored) if stored is not None else self._resolve_gen_kwargs({})
        for key in ("num_beams", "max_length", "max_new_tokens"):
            if key in gen_kwargs and gen_kwargs[key] is None:
                gen_kwargs.pop(key)
        if self.dist.enabled and self.args.fsdp:
            gen_kwargs.setdefault("synced_gpus", True)  # every rank must run as many forwards as the longest one
        generation_inputs = {k: v for k, v in inputs.items() if k not in self.label_names}
        if has_labels and "decoder_input_ids" in generation_inputs and "labels" in inputs and \
                generation_inputs["decoder_input_ids"].shape == inputs["labels"].shape:
            # decoder_input_ids made from the labels by the collator: generation must start from scratch
            generation_inputs.pop("decoder_input_ids")
            generation_inputs.pop("decoder_attention_mask", None)
        prompt_len = 0
        if not encoder_decoder and isinstance(generation_inputs.get("input_ids"), torch.Tensor):
            prompt_len = generation_inputs["input_ids"].shape[-1]
            mask = generation_inputs.get("attention_mask")
            if isinstance(mask, torch.Tensor) and mask.dim() == 2 and bool((mask[:, -1] == 0).any()) \
                    and not getattr(self, "_warned_right_padding", False):
                self._warned_right_padding = True
                warnings.warn("A decoder-only model is generating from right-padded prompts, so some rows continue "
                              "after padding tokens; set tokenizer.padding_side = 'left' for the evaluation data.",
                              UserWarning, stacklevel=4)
        return generation_inputs, gen_kwargs, prompt_len

    def _generation_loss(self, model, inputs: dict, encoder_decoder: bool):
        """The loss of a generating evaluation batch, when the labels fit the model (None otherwise)."""
        ids = inputs.get("input_ids")
        labels_fit = encoder_decoder or "labels" not in inputs or not isinstance(ids, torch.Tensor) \
            or inputs["labels"].shape == ids.shape
        if not labels_fit:
            return None
        with torch.no_grad(), self.precision.autocast(evaluating=True):
            loss, _ = self.compute_loss(model, inputs, return_outputs=True)
        return loss.detach().mean()

    def _generation_width(self, gen_model, gen_kwargs: dict, encoder_decoder: bool) -> int | None:
        """The width every batch's generated ids are padded to, so batches concatenate without -100."""
        start = 1 if encoder_decoder else 0  # encoder-decoder outputs begin with the decoder start token
        if gen_kwargs.get("max_new_tokens") is not None:
            return int(gen_kwargs["max_new_tokens"]) + start
        if gen_kwargs.get("max_length") is not None:
            return int(gen_kwargs["max_length"])
        config = getattr(gen_model, "generation_config", None)
        if config is not None:
            if getattr(config, "max_new_tokens", None) is not None:
                return int(config.max_new_tokens) + start
            if getattr(config, "max_length", None) is not None:
                return int(config.max_length)
        return None

    def _pad_token_id(self) -> int:
        pc = self.processing_class
        tok = getattr(pc, "tokenizer", pc)  # a processor holds its tokenizer
        for source in (tok, getattr(unwrap_model(self.model), "generation_config", None),
                       getattr(unwrap_model(self.model), "config", None)):
            if source is None:
                continue
            for name in ("pad_token_id", "eos_token_id"):
                value = getattr(source, name, None)
                if isinstance(value, (list, tuple)):
                    value = value[0] if value else None
                if value is not None:
                    return int(value)
        raise ConfigError("Cannot pad the generated ids: neither the tokenizer nor the model config has a "
                          "pad_token_id or eos_token_id. Set model.config.pad_token_id (or pass processing_class).")

    def _pad_tensors_to_max_len(self, tensor: torch.Tensor, max_length: int | None) -> torch.Tensor:
        if max_length is None or tensor.shape[-1] >= max_length:
            return tensor
        padded = torch.full((tensor.shape[0], max_length), self._pad_token_id(), dtype=tensor.dtype,
                            device=tensor.device)
        padded[:, : tensor.shape[-1]] = tensor
        return padded
