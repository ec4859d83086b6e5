"""Pre-padded batches trimmed to their longest real row.

Rows tokenized with ``padding="max_length"`` (transformers' ``run_glue.py`` does it by default) or collated
to a fixed ``max_length`` reach the model with every batch as wide as the longest row allowed, although most
columns are padding. When the model takes an ``attention_mask`` (``TrainingArguments.trim_padding``: None =
automatic, True, False), every batch loses the columns that are padding in all of its rows:

* a column goes only when the attention mask is 0 in every row **and** every token-level label there is -100
  (so the loss and ``num_items_in_batch`` are unchanged);
* every tensor shaped ``[batch, seq, ...]`` like the mask (``input_ids``, ``token_type_ids``, ``position_ids``,
  token-level ``labels``, ...) is cut alike; float labels of that shape (multi-label targets) are not;
* right padding always; left padding only where the outputs provably stay the same: token-level labels (a
  sequence-level head may read column 0), positions that stay those of the full row (the batch carries
  ``position_ids``, cut alike, or the model computes positions from the tokens: RoBERTa's family), no 1-D
  integer tensor that could index into the row, and for a causal LM no counted label predicted from a pad;
* encoder-decoder models: the encoder side by its mask; in training the decoder side (``labels``,
  ``decoder_input_ids``, ``decoder_attention_mask``) on the right by its own padding (-100 labels, 0 decoder
  mask): the decoder is causal, so dropping its trailing positions changes nothing before them;
* the width is rounded up to the collator's ``pad_to_multiple_of`` (or the torch_compile bucket);
* left alone: batches without a 2-D mask, packed batches (``cu_seq_lens_*``, ``seq_idx``), a batch with a row
  without any real token; and, unless ``trim_padding=True``: question answering (the start/end softmax runs
  over padding too), models whose layers mix positions outside attention or read the last column
  (:data:`NOT_EXACT`), and training with NEFTune (its noise scale depends on the padded width).

Evaluation batches are trimmed in the evaluation loop, and the token-level outputs and labels padded back on
the host (with -100, as the loop pads batches of different widths) to the batch's full width, so
``compute_metrics`` gets the shapes it got before (``preprocess_logits_for_metrics`` sees the trimmed ones).
A trimmed width that equals another width of the batch or ``config.num_labels`` is widened by a column, so that
a sequence-level output is never mistaken for a token-level one. With ``predict_with_generate`` only
encoder-decoder inputs are trimmed (the generated tokens are the decoder's; a decoder-only prompt is generated
from as given).

:func:`trimmed_lengths` gives each row's width after trimming, read from the Arrow columns without building
Python rows, so that ``train_sampling_strategy="auto"`` groups rows of similar real length.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100
# model types whose layers mix positions outside attention, whose attention depends on the padded width, or
# whose head reads the last column (XLNet's summary): not trimmed unless trim_padding=True
NOT_EXACT = frozenset({"funnel", "convbert", "reformer", "big_bird", "bigbird_pegasus", "nystromformer", "yoso",
                       "mra", "canine", "perceiver", "xlnet"})
_PACKED_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "seq_idx")
_LABEL_KEYS = ("labels", "shift_labels")
_SIGNED = (torch.int8, torch.int16, torch.int32, torch.int64)


class PaddingTrimmer:
    """Cuts a collated batch (a dict of CPU tensors) to the columns that hold a real token or a label."""

    def __init__(self, *, shift_labels: bool = False, encoder_decoder: bool = False,
                 positions_from_tokens: bool = False, multiple: int | None = None, evaluating: bool = False,
                 forbidden_widths: Iterable[int] = (), trim_decoder: bool = True, restore: bool = True) -> None:
        self.shift_labels = shift_labels
        self.encoder_decoder = encoder_decoder
        self.positions_from_tokens = positions_from_tokens
        self.multiple = int(multiple) if multiple and multiple > 1 else None
        self.evaluating = evaluating
        self.forbidden_widths = frozenset(int(w) for w in forbidden_widths if isinstance(w, int))
        self.trim_decoder = trim_decoder and not evaluating
        self.restore = restore  # False: outputs are not the encoder's (generated tokens): nothing to pad back

    # ------------------------------------------------------------------------------------------ batch
    def trim(self, batch: Any) -> tuple[Any, tuple[int, int, int, int] | None]:
        """(trimmed batch, info for :meth:`pad_back` or None when nothing was cut)."""
        if not isinstance(batch, Mapping):
            return batch, None
        mask = batch.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or any(k in batch for k in _PACKED_KEYS):
            return batch, None
        out = dict(batch)
        info = self._trim_encoder(out, mask)
        if self.encoder_decoder and self.trim_decoder:
            self._trim_decoder(out)
        return out, (info if self.restore else None)

    def _encoder_keys(self, batch, shape) -> list[str]:
        keys = []
        for key, value in batch.items():
            if not isinstance(value, torch.Tensor) or value.dim() < 2 or tuple(value.shape[:2]) != shape:
                continue
            if self.encoder_decoder and (key.startswith("decoder_") or key in _LABEL_KEYS):
                continue
            if key in _LABEL_KEYS and value.is_floating_point():
                continue  # multi-label targets [batch, num_labels] that happen to be as wide as the row
            keys.append(key)
        return keys

    def _trim_encoder(self, out: dict, mask: torch.Tensor):
        rows, width = mask.shape
        real = mask != 0
        if not bool(real.any(1).all()):
            return None  # a row without any real token: its (fully masked) outputs would change
        keep = real.any(0)
        token_labels = []
        if not self.encoder_decoder:
            for key in _LABEL_KEYS:
                labels = out.get(key)
                if isinstance(labels, torch.Tensor) and tuple(labels.shape) == (rows, width) \
                        and not labels.is_floating_point():
                    keep = keep | (labels != IGNORE_INDEX).any(0)
                    token_labels.append((key, labels))
        hits = torch.nonzero(keep)
        start, end = int(hits[0]), int(hits[-1]) + 1
        if start and not self._left_trim_safe(out, real, token_labels):
            start = 0
        if self.multiple:
            size = -(-(end - start) // self.multiple) * self.multiple
            end = min(width, start + size)
            start = max(0, end - size)
        if self.evaluating:
            others = {int(v.shape[1]) for k, v in out.items() if isinstance(v, torch.Tensor) and v.dim() >= 2
                      and tuple(v.shape[:2]) != (rows, width)}
            forbidden = self.forbidden_widths | others
            while end - start < width and (end - start) in forbidden:
                if end < width:
                    end += 1
                else:
                    start -= 1
        if start == 0 and end == width:
            return None
        for key in self._encoder_keys(out, (rows, width)):
            out[key] = out[key][:, start:end].contiguous()
        return (rows, width, start, end)

    def _left_trim_safe(self, batch, real: torch.Tensor, token_labels: list) -> bool:
        """Whether cutting leading columns keeps every output: only with token-level labels (a sequence-level
        head may read column 0, an index label points into the row), positions that stay the same, and for a
        causal LM no counted label predicted from a pad."""
        if not token_labels:
            return False
        for value in batch.values():  # a 1-D integer tensor other than class labels may index into the row
            if isinstance(value, torch.Tensor) and value.dim() == 1 and not value.is_floating_point():
                return False
        first = real.to(torch.int8).argmax(1, keepdim=True)
        columns = torch.arange(real.shape[1]).unsqueeze(0)
        for key, labels in token_labels:
            if key != "shift_labels" and not self.shift_labels:
                continue
            # position i predicts label i+1 (shift_labels[i]), and a pad before a row's first token sees no real
            # token: its prediction changes with the pads before it
            predicted_by_pads = (columns < first) if key == "shift_labels" else (columns <= first) & (columns >= 1)
            if bool((predicted_by_pads & (labels != IGNORE_INDEX)).any()):
                return False
        position_ids = batch.get("position_ids")
        if isinstance(position_ids, torch.Tensor):  # cut alike: every kept column keeps its position
            return tuple(position_ids.shape) == tuple(real.shape)
        return self.positions_from_tokens

    def _trim_decoder(self, out: dict) -> None:
        labels = out.get("labels")
        dmask = out.get("decoder_attention_mask")
        ref = labels if isinstance(labels, torch.Tensor) and labels.dim() == 2 and not labels.is_floating_point() \
            else None
        if ref is None and not (isinstance(dmask, torch.Tensor) and dmask.dim() == 2):
            return
        shape = tuple((ref if ref is not None else dmask).shape)
        keep = torch.zeros(shape[1], dtype=torch.bool)
        if ref is not None:
            keep |= (ref != IGNORE_INDEX).any(0)
        if isinstance(dmask, torch.Tensor) and tuple(dmask.shape) == shape:
            keep |= (dmask != 0).any(0)
        hits = torch.nonzero(keep)
        if not len(hits):
            return
        end = int(hits[-1]) + 1
        if self.multiple:
            end = min(shape[1], -(-end // self.multiple) * self.multiple)
        if end == shape[1]:
            return
        for key, value in list(out.items()):
            if (key == "labels" or key.startswith("decoder_")) and isinstance(value, torch.Tensor) \
                    and value.dim() >= 2 and tuple(value.shape[:2]) == shape:
                out[key] = value[:, :end].contiguous()

    # ------------------------------------------------------------------------------------------ outputs
    @staticmethod
    def pad_back(outputs: Any, info: tuple[int, int, int, int] | None) -> Any:
        """Token-level outputs ([batch, trimmed width, ...]) back to the batch's full width, -100 where cut."""
        if info is None or outputs is None:
            return outputs
        rows, width, start, end = info
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(PaddingTrimmer.pad_back(o, info) for o in outputs)
        if isinstance(outputs, Mapping):
            return {k: PaddingTrimmer.pad_back(v, info) for k, v in outputs.items()}
        if isinstance(outputs, torch.Tensor) and outputs.dim() >= 2 and outputs.shape[0] == rows \
                and outputs.shape[1] == end - start:
            fill = IGNORE_INDEX if outputs.is_floating_point() or outputs.dtype in _SIGNED else 0
            full = outputs.new_full((rows, width, *outputs.shape[2:]), fill)
            full[:, start:end] = outputs
            return full
        return outputs

    @staticmethod
    def pad_back_all(outputs: list, cuts: list) -> list:
        """:meth:`pad_back` for each batch's (host) outputs with that batch's cut."""
        return [PaddingTrimmer.pad_back(o, c) for o, c in zip(outputs, cuts)]


class TrimPaddingCollator:
    """Wraps a training collator: its batches trimmed (see the module docstring). Other code looks through it
    via ``data_collator``, as through RemoveColumnsCollator; ``trims_padding`` tells the samplers that a fixed
    padded length no longer reaches the model."""

    trims_padding = True

    def __init__(self, data_collator: Any, trimmer: PaddingTrimmer) -> None:
        self.data_collator = data_collator
        self.trimmer = trimmer

    def __call__(self, features: list[Any]) -> Any:
        return self.trimmer.trim(self.data_collator(features))[0]


class EvalTrimCollator:
    """Wraps an evaluation collator: batches pass unchanged; the evaluation loop trims them with
    ``eval_trimmer`` (it needs each batch's full width to pad the outputs back)."""

    trims_padding = True

    def __init__(self, data_collator: Any, trimmer: PaddingTrimmer) -> None:
        self.data_collator = data_collator
        self.eval_trimmer = trimmer

    def __call__(self, features: list[Any]) -> Any:
        return self.data_collator(features)


# ------------------------------------------------------------------------------------------ decisions
def _model(trainer):
    from ..distributed import unwrap_model
    return unwrap_model(trainer.model)


def _takes(model, name: str) -> bool:
    try:
        return name in inspect.signature(getattr(model, "forward", None)).parameters
    except (TypeError, ValueError):
        return False


def takes_attention_mask(model: torch.nn.Module) -> bool:
    return _takes(model, "attention_mask")


def trimming_enabled(trainer: Any, training: bool) -> bool:
    """Whether batches are trimmed: ``trim_padding`` (None: automatic) and the model."""
    setting = getattr(trainer.args, "trim_padding", None)
    if setting is False:
        return False
    model = _model(trainer)
    if not takes_attention_mask(model):
        if setting is True:
            from ..errors import ConfigError
            raise ConfigError(f"trim_padding=True, but {type(model).__name__}.forward takes no attention_mask, so "
                              "padding cannot be told from tokens: drop trim_padding (or set it to False).")
        return False
    if setting is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type in NOT_EXACT or _takes(model, "start_positions"):
            return False  # question answering: the start/end softmax runs over every column, padding too
        if training and getattr(trainer.args, "neftune_noise_alpha", None):
            return False
    return True


def make_trimmer(trainer: Any, collator: Any, training: bool) -> PaddingTrimmer | None:
    if not trimming_enabled(trainer, training):
        return None
    from ..loss_scaling import shifts_labels
    from .samplers import collator_padding
    model = _model(trainer)
    config = getattr(model, "config", None)
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    generating = not training and bool(getattr(trainer.args, "predict_with_generate", False))
    if generating and not encoder_decoder:
        return None  # a decoder-only prompt is generated from as given
    multiple, _ = collator_padding(collator)
    if getattr(trainer.args, "torch_compile", False):  # few distinct shapes: the default collator's buckets
        multiple = max(multiple or 1, 64 if trainer.device.type == "cuda" else 16)
    num_labels = getattr(config, "num_labels", None)
    return PaddingTrimmer(
        shift_labels=shifts_labels(model), encoder_decoder=encoder_decoder, multiple=multiple,
        positions_from_tokens=any(hasattr(m, "create_position_ids_from_input_ids") for m in model.modules()),
        evaluating=not training, forbidden_widths=(num_labels,) if isinstance(num_labels, int) else (),
        restore=not generating)


def train_collator(trainer: Any, collator: Any) -> Any:
    """The training collate function, trimming when :func:`trimming_enabled`."""
    trimmer = make_trimmer(trainer, collator, training=True)
    return collator if trimmer is None else TrimPaddingCollator(collator, trimmer)


def eval_collator(trainer: Any, collator: Any) -> Any:
    """The evaluation collate function, carrying the evaluation loop's trimmer when :func:`trimming_enabled`."""
    trimmer = make_trimmer(trainer, collator, training=False)
    return collator if trimmer is None else EvalTrimCollator(collator, trimmer)


def batch_trimmer(dataloader: Any) -> PaddingTrimmer | None:
    """The trimmer the evaluation loop applies to ``dataloader``'s batches (None: run them as collated)."""
    return getattr(getattr(dataloader, "collate_fn", None), "eval_trimmer", None)


def _trimmer_in(collator) -> PaddingTrimmer | None:
    seen = 0
    while collator is not None and seen < 8:
        found = getattr(collator, "trimmer", None) or getattr(collator, "eval_trimmer", None)
        if isinstance(found, PaddingTrimmer):
            return found
        collator, seen = getattr(collator, "data_collator", None), seen + 1
    return None


def row_lengths(dataset: Any, length_column_name: str, collator: Any, *,
                allow_slow: bool = True) -> np.ndarray | None:
    """Row lengths for the samplers: the length column if the dataset has one; else, when ``collator`` trims
    padding, each row's trimmed width (:func:`trimmed_lengths`); else ``len(input_ids)`` (``dataset_lengths``)."""
    from .samplers import dataset_lengths
    trimmer = _trimmer_in(collator)
    columns = getattr(dataset, "column_names", None)
    if trimmer is not None and not (isinstance(columns, list) and length_column_name in columns):
        widths = trimmed_lengths(dataset, labels=not trimmer.encoder_decoder, allow_slow=allow_slow)
        if widths is not None:
            return widths
    return dataset_lengths(dataset, length_column_name, allow_slow=allow_slow)


# ------------------------------------------------------------------------------------------ row widths
_WIDTH_CACHE: OrderedDict = OrderedDict()


def trimmed_lengths(dataset: Any, *, labels: bool = True, allow_slow: bool = True) -> np.ndarray | None:
    """Each row's width once its trailing padding is cut: one past the last column whose attention mask is not
    0 (or, with ``labels``, whose token-level label is not -100). None without an ``attention_mask`` column.

    ``datasets.Dataset``: vectorised over the Arrow buffers (no Python rows; cached by fingerprint). A list of
    dict rows: one numpy call per row. Other map-style datasets: row by row when ``allow_slow``."""
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, list):
        if "attention_mask" not in columns:
            return None
        key = getattr(dataset, "_fingerprint", None)
        cache_key = (key, labels, len(dataset)) if key else None
        if cache_key is not None and cache_key in _WIDTH_CACHE:
            _WIDTH_CACHE.move_to_end(cache_key)
            return _WIDTH_CACHE[cache_key]
        widths = _arrow_widths(dataset, labels and "labels" in columns, labels and "label" in columns)
        if widths is not None and cache_key is not None:
            _WIDTH_CACHE[cache_key] = widths
            while len(_WIDTH_CACHE) > 16:
                _WIDTH_CACHE.popitem(last=False)
        return widths
    if not isinstance(dataset, (list, tuple)) and not allow_slow:
        return None
    try:
        if not len(dataset) or not isinstance(dataset[0], Mapping) or "attention_mask" not in dataset[0]:
            return None
        return np.asarray([_row_width(dataset[i], labels) for i in range(len(dataset))], dtype=np.int64)
    except Exception:
        return None


def _row_width(row, labels: bool) -> int:
    mask = np.asarray(row["attention_mask"]).reshape(-1)
    real = mask != 0
    for key in ("labels", "label"):
        value = row.get(key) if labels else None
        if value is not None and not isinstance(value, (int, float, str)):
            value = np.asarray(value)
            if value.ndim == 1 and len(value) == len(mask) and value.dtype.kind in "iu":
                real = real | (value != IGNORE_INDEX)
    hits = np.flatnonzero(real)
    return int(hits[-1]) + 1 if len(hits) else 0


def _arrow_widths(dataset, use_labels: bool, use_label: bool, block_rows: int = 16384):
    """Row widths from the Arrow table, a block of rows at a time (memory: a few bytes per token of one block)."""
    try:
        import pyarrow as pa
        table = dataset.data
        if not _is_list(pa, table.column("attention_mask").type):
            return None
        label_names = [name for name, wanted in (("labels", use_labels), ("label", use_label)) if wanted
                       and _is_list(pa, table.column(name).type)
                       and pa.types.is_integer(table.column(name).type.value_type)]
        parts = []
        for start in range(0, table.num_rows, block_rows):
            block = table.slice(start, block_rows)
            parts.append(_block_widths(block.column("attention_mask").combine_chunks(),
                                       [block.column(n).combine_chunks() for n in label_names]))
        widths = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        indices = getattr(dataset, "_indices", None)
        if indices is not None:
            widths = widths[indices.column(0).to_numpy()]
        return widths if len(widths) == len(dataset) else None
    except Exception:
        return None


def _is_list(pa, arrow_type) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)


def _block_widths(mask, label_columns) -> np.ndarray:
    import pyarrow.compute as pc
    lengths = pc.fill_null(pc.list_value_length(mask), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    real = pc.list_flatten(mask).to_numpy(zero_copy_only=False) != 0
    for column in label_columns:
        label_lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
        if np.array_equal(label_lengths, lengths):  # token-level labels, one per mask entry
            real = real | (pc.list_flatten(column).to_numpy(zero_copy_only=False) != IGNORE_INDEX)
    rows = len(lengths)
    if rows and int(lengths.min()) == int(lengths.max()):  # pre-padded: a [rows, width] matrix
        width = int(lengths[0])
        if not width:
            return np.zeros(rows, dtype=np.int64)
        grid = real.reshape(rows, width)
        last = width - np.argmax(grid[:, ::-1], axis=1)
        return np.where(grid.any(1), last, 0).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if rows else lengths
    position = np.arange(len(real), dtype=np.int64) - np.repeat(starts, lengths)
    marked = np.where(real, position + 1, 0)
    widths = np.zeros(rows, dtype=np.int64)
    nonempty = lengths > 0
    if nonempty.any():
        widths[nonempty] = np.maximum.reduceat(marked, starts[nonempty])
    return widths
