"""Chunked cross-entropy for causal LMs: the loss without the (tokens x vocabulary) logits tensor.

For a causal LM the logits (one row of ``vocab_size`` per token, upcast to fp32 for the loss) are the largest
tensor of a training step: 4,096 tokens x a 32k vocabulary is 500 MiB, and the plain loss keeps it, its
log-softmax and its gradient. ``chunked_cross_entropy=True`` computes the same loss chunk by chunk:

* the model runs as usual, except that its output embedding (``lm_head``, a ``torch.nn.Linear``, tied to the
  input embedding or not, with or without bias) returns the summed loss of the whole micro-batch instead of logits.
  The head's ``forward`` is replaced only for the duration of that one forward call, so ``generate()``,
  ``evaluate()`` and the model's own code are untouched, and DDP/FSDP see the head's weight used in the forward;
* ``ChunkedLinearCrossEntropy`` walks the tokens in chunks: the forward keeps only each token's logsumexp; the
  backward recomputes each chunk's logits to form the gradients of the hidden states, the weight and the bias.
  Saved for backward: the hidden states (kept by the plain loss too), the targets and one float per token.

The result equals transformers' causal-LM loss (labels shifted by one, ``-100`` ignored, logits upcast to fp32,
``sum / num_items_in_batch`` when the Trainer passes the accumulated batch's label count), to float rounding.
Under bf16/fp16 autocast each chunk's matmul runs in the autocast dtype, as the plain ``lm_head`` does.
Models whose returned logits are not ``lm_head(hidden_states)`` (final-logit soft-capping, logit scaling) are
refused by name, since the chunked loss could not be exact for them. Evaluation keeps the plain forward:
metrics need the logits.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from .errors import ConfigError, ModelError

logger = logging.getLogger("trainwright")

IGNORE_INDEX = -100
# automatic chunk: about 2**24 fp32 logits (64 MiB) per chunk, in multiples of 64 tokens
_AUTO_CHUNK_ELEMENTS = 2 ** 24
# config attributes of transformers models that change the logits after lm_head: (name, value that is a no-op)
_LOGIT_TRANSFORMS = (("final_logit_softcapping", None), ("output_logit_soft_cap", None), ("logit_softcap", None),
                     ("logits_scaling", 1.0), ("logit_scale", 1.0), ("output_multiplier", 1.0))
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


# ====================================================================== the loss
class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``sum over tokens of cross_entropy(hidden @ weight.T + bias, targets)`` (targets ``-100`` skipped), with
    optional label smoothing, computed ``chunk_size`` tokens at a time. Returns a 0-dim fp32 tensor."""

    @staticmethod
    def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any, chunk_size: int, smoothing: float,
                compute_dtype: Any) -> torch.Tensor:
        n = hidden.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        with _no_autocast(hidden.device):
            for start in range(0, n, chunk_size):
                end = min(start + chunk_size, n)
                logits = _chunk_logits(hidden[start:end], w, b, compute_dtype)
                chunk_lse = torch.logsumexp(logits, dim=-1)
                t = targets[start:end]
                target_logit = logits.gather(1, t.clamp(min=0).unsqueeze(1)).squeeze(1)
                token_loss = chunk_lse - target_logit
                if smoothing:
                    token_loss = (1.0 - smoothing) * token_loss + smoothing * (chunk_lse - logits.mean(dim=-1))
                total += torch.where(t != IGNORE_INDEX, token_loss, torch.zeros_like(token_loss)).sum()
                lse[start:end] = chunk_lse
                del logits
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size, ctx.smoothing, ctx.compute_dtype = chunk_size, smoothing, compute_dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: Any) -> tuple:
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        chunk_size, smoothing, cd = ctx.chunk_size, ctx.smoothing, ctx.compute_dtype
        vocab = weight.shape[0]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=weight.device) if need_b else None
        w = weight.to(cd)
        b = bias.to(cd) if bias is not None else None
        with _no_autocast(hidden.device):
            for start in range(0, hidden.shape[0], chunk_size):
                end = min(start + chunk_size, hidden.shape[0])
                h = hidden[start:end].to(cd)
                t = targets[start:end]
                valid = (t != IGNORE_INDEX).to(torch.float32)
                # d token_loss / d logits = softmax - (1 - eps) * onehot(target) - eps / V; zero where ignored
                grad = _chunk_logits(h, w, b, cd)
                grad.sub_(lse[start:end].unsqueeze(1)).exp_()
                grad.scatter_add_(1, t.clamp(min=0).unsqueeze(1), (-(1.0 - smoothing) * valid).unsqueeze(1))
                if smoothing:
                    grad.sub_(smoothing / vocab)
                grad.mul_((valid * grad_total).unsqueeze(1))
                if grad_b is not None:
                    grad_b += grad.sum(dim=0)
                g = grad.to(cd)
                del grad
                if grad_h is not None:
                    grad_h[start:end] = g @ w
                if grad_w is not None:
                    if g.dtype == torch.float32:
                        grad_w.addmm_(g.t(), h)
                    else:  # as the autocast matmul: the product in the compute dtype, summed over chunks in fp32
                        grad_w += (g.t() @ h).float()
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None, None


def _chunk_logits(h, w, b, compute_dtype):
    """fp32 logits of one chunk, the matmul in ``compute_dtype`` (the autocast dtype, else the weight's)."""
    return torch.nn.functional.linear(h.to(compute_dtype), w, b).float()


def _no_autocast(device):
    return torch.autocast(device_type=device.type, enabled=False) if torch.is_autocast_enabled(device.type) \
        else contextlib.nullcontext()


def _compute_dtype(device, weight):
    """The matmul dtype of the plain ``lm_head``: the autocast dtype inside autocast, else the weight's."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


@torch.compiler.disable  # under torch_compile: the chunk loop runs eagerly (a graph break at the head)
def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             targets: torch.Tensor, chunk_size: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against ``targets`` (``-100`` ignored), chunked.
    ``hidden`` is (tokens, hidden) or (..., hidden) with ``targets`` of the leading shape."""
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1).to(h.device)
    if t.shape[0] != h.shape[0]:
        raise ModelError(f"chunked_cross_entropy: {h.shape[0]} hidden states for {t.shape[0]} labels.")
    return ChunkedLinearCrossEntropy.apply(h, weight, bias, t, int(chunk_size), float(label_smoothing),
                                           _compute_dtype(h.device, weight))


def chunk_size_for(setting: Any, vocab_size: int) -> int:
    """Tokens per chunk: an int setting as given; ``True``: about 2**24 logits per chunk (64-token multiples)."""
    if isinstance(setting, bool):
        return max(64, (_AUTO_CHUNK_ELEMENTS // max(vocab_size, 1)) // 64 * 64)
    return int(setting)


# ====================================================================== the Trainer's side
def compute_chunked_loss(trainer: Any, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
    """``Trainer.compute_loss`` for a training step with ``chunked_cross_entropy``: the model runs with its
    ``lm_head`` returning the summed loss; the result is ``sum / num_items_in_batch`` (or the mean over this
    micro-batch's label tokens without it), as the plain path returns."""
    from .distributed import unwrap_model
    base = unwrap_model(trainer.model)
    head = _output_head(base)
    labels = inputs["labels"]
    inputs = {k: v for k, v in inputs.items() if k != "labels"}
    # transformers' causal shift: position i predicts token i + 1; the last position predicts nothing
    targets = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    chunk = chunk_size_for(trainer.args.chunked_cross_entropy, head.out_features)
    with _head_returns_loss(head, targets, chunk, trainer.args.label_smoothing_factor):
        outputs = model(**inputs)
    total = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    if num_items_in_batch is not None:
        loss = total / num_items_in_batch
    else:
        loss = total / (targets != IGNORE_INDEX).sum()  # the micro-batch mean (nan without labels, as the plain loss)
    if not return_outputs:
        return loss
    if isinstance(outputs, dict):
        outputs["logits"] = None  # there are no logits: that is the point
    return loss, outputs


@contextlib.contextmanager
def _head_returns_loss(head: torch.nn.Linear, targets: torch.Tensor, chunk: int, smoothing: float):
    def forward(hidden) -> torch.Tensor:
        if hidden.shape[:-1] != targets.shape:
            raise ModelError(f"chunked_cross_entropy: the output embedding received hidden states of shape "
                             f"{tuple(hidden.shape)} for labels of shape {tuple(targets.shape)}; the model "
                             "must compute the logits of every position (logits_to_keep=0).")
        return linear_cross_entropy_sum(hidden, head.weight, head.bias, targets, chunk, smoothing)

    previous = head.__dict__.get("forward")  # an instance-level forward (e.g. accelerate's hooks) comes back after
    head.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del head.forward  # back to the class's forward
        else:
            head.forward = previous


def _output_head(model) -> torch.nn.Linear:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, torch.nn.Linear):
        what = "has no output embedding" if head is None else f"has an output embedding of type {type(head).__name__}"
        raise ModelError(f"chunked_cross_entropy=True needs a causal LM whose output embedding "
                         f"(get_output_embeddings(), e.g. lm_head) is a torch.nn.Linear; {type(model).__name__} "
                         f"{what}. Set chunked_cross_entropy=False for this model.")
    return head


def check_chunked_loss(trainer: Any, model: Any) -> None:
    """Before the first step: the setting is valid and the model's loss can be computed exactly in chunks
    (a causal LM; an nn.Linear head; logits returned as the head computes them). Raises with the model's name."""
    args = trainer.args
    setting = args.chunked_cross_entropy
    if setting is False or setting is None:
        return
    if not isinstance(setting, (bool, int)) or (not isinstance(setting, bool) and setting < 1):
        raise ConfigError(f"chunked_cross_entropy={setting!r} must be True (automatic chunk size), False, or a "
                          "positive number of tokens per chunk (e.g. 1024).")
    if trainer.compute_loss_func is not None:
        raise ConfigError("chunked_cross_entropy=True computes the causal-LM loss itself and cannot be combined "
                          "with compute_loss_func: drop one of them.")
    base = _peft_base(model)
    name = type(base).__name__
    if not any(cls.__name__.endswith(_CAUSAL_SUFFIXES) for cls in type(base).__mro__):
        raise ModelError(f"chunked_cross_entropy=True applies to causal language models (...ForCausalLM / "
                         f"...LMHeadModel); {name} is not one. Set chunked_cross_entropy=False.")
    head = _output_head(model)
    config = getattr(base, "config", None)
    configs = [config] + ([config.get_text_config()] if hasattr(config, "get_text_config") else [])
    for cfg in configs:
        for attr, neutral in _LOGIT_TRANSFORMS:
            value = getattr(cfg, attr, neutral)
            if value is not None and value != neutral and not isinstance(value, torch.nn.Module):
                raise ModelError(f"chunked_cross_entropy=True cannot be exact for {name}: its config sets "
                                 f"{attr}={value!r}, which changes the logits after lm_head. Set "
                                 "chunked_cross_entropy=False for this model.")
    _probe(model, base, head, name)


def _probe(model, base, head, name: str) -> None:
    """One forward of a few tokens in eval mode: the logits the model returns must be the head's output."""
    config = getattr(base, "config", None)
    vocab = head.out_features
    ids = torch.arange(1, 1 + min(8, vocab - 1), device=head.weight.device).unsqueeze(0) % vocab
    seen = {}
    handle = head.register_forward_hook(lambda module, args, output: seen.update(output=output))
    modes = [(m, m.training) for m in model.modules()]
    use_cache = getattr(config, "use_cache", None)
    try:
        model.eval()
        with torch.no_grad():
            outputs = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception as e:  # a model that cannot run on a few plain input_ids: rely on the config checks above
        logger.warning("chunked_cross_entropy: could not check that %s returns lm_head's output as its logits "
                       "(a probe forward failed: %s); the config checks passed.", name, e)
        seen, outputs = {}, None
    finally:
        handle.remove()
        for module, training in modes:
            module.training = training
        if use_cache is not None:
            config.use_cache = use_cache
    if outputs is None or "output" not in seen:
        return
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    expected = seen["output"]
    if not isinstance(logits, torch.Tensor) or logits.shape != expected.shape or \
            not torch.allclose(logits.float(), expected.float(), rtol=1e-4, atol=1e-5):
        raise ModelError(f"chunked_cross_entropy=True cannot be exact for {name}: the logits it returns are not "
                         "its output embedding's output (the model transforms them after lm_head, e.g. soft-capping "
                         "or scaling). Set chunked_cross_entropy=False for this model.")


def _peft_base(model):
    """The transformers model under a PEFT wrapper (``PeftModel.base_model.model``), else the model."""
    if hasattr(model, "peft_config") and hasattr(model, "base_model"):
        inner = model.base_model
        return getattr(inner, "model", inner)
    return model


def uses_chunked_loss(trainer: Any, model: Any, inputs: Any) -> bool:
    """Whether this ``compute_loss`` call takes the chunked path: a training-mode forward with labels."""
    return bool(trainer.args.chunked_cross_entropy) and model.training and "labels" in inputs and \
        trainer.compute_loss_func is None
