"""Sharing on the Hugging Face Hub (docs/sharing.md): ``push_to_hub=True``, ``hub_strategy``, ``Trainer.push_to_hub()``
and ``trainwright push OUTPUT_DIR``, through ``huggingface_hub``'s own client (``HfApi.create_repo``,
``HfApi.upload_folder``), with transformers' semantics: the repo is created when the Trainer is built; each checkpoint
save pushes in the background (``output_dir`` with the checkpoint's model files at the root; ``last-checkpoint/`` or
``checkpoint-N/`` too for ``"checkpoint"`` / ``"all_checkpoints"``; none for ``"end"``), skipped while the previous
push runs unless ``hub_always_push``; ``save_model()`` and ``push_to_hub()`` push ``output_dir`` (+ model card);
``train()`` waits at its end for the pushes in flight; ``_*`` and ``checkpoint-*`` never go to the root.

On purpose, unlike transformers: each push uploads a snapshot taken when it is queued (``output_dir/_hub_push-*``:
hard links to weight and checkpoint files, which are never modified in place, copies of the rest; removed once
uploaded), so nothing half-written reaches the Hub and ``output_dir`` is not modified; the arguments go as
``training_args.json`` (no pickle). Pushes during training never fail it (one warning naming the endpoint and the
error, later failures at info level); an unreachable Hub at ``Trainer(...)`` is one error-level log saying how to
push later, and the run trains locally; a rejected token/name raises ``HubError`` at ``Trainer(...)``; an explicit
``push_to_hub()`` that cannot push raises ``HubError`` after saving locally. ``HF_ENDPOINT`` is read when a push
starts (``huggingface_hub`` reads it once, at import).
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import socket
import sys
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any

from .checkpoint.format import MANIFEST_NAME
from .checkpoint.writer import _host
from .errors import HubError

logger = logging.getLogger("trainwright")

# as transformers: never pushed from the root of output_dir; plus trainwright's temp dirs of a write in progress
IGNORE_PATTERNS = ["_*", "checkpoint-*"]
_OWN_IGNORE = [".*.trainwright-*"]
STAGING_PREFIX = "_hub_push-"
LAST_CHECKPOINT = "last-checkpoint"
# copied from a checkpoint to the root of the repo (transformers' list, without the pickle formats) + our args
MODELING_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                  "adapter_config.json", "adapter_model.safetensors", "training_args.json")
_MASKED_TOKEN = "<HUB_TOKEN>"
# no answer at all, in the HTTP libraries of huggingface_hub's releases (httpx2 for 2.x, httpx for 1.x, requests)
_TRANSPORT_ERRORS = (("httpx2", "TransportError"), ("httpx", "TransportError"),
                     ("requests.exceptions", "ConnectionError"), ("requests.exceptions", "Timeout"))


# ====================================================================== endpoint, errors
def hub_endpoint() -> str:
    """The Hub's URL: ``HF_ENDPOINT`` as set now, else ``huggingface_hub``'s (``https://huggingface.co``)."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants
    return constants.ENDPOINT


def _offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def _is_unreachable(e: BaseException) -> bool:
    """Offline mode, or no answer at all (connection refused, DNS, timeouts), as opposed to an HTTP error."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    if isinstance(e, OfflineModeIsEnabled):
        return True
    if isinstance(e, HfHubHTTPError):
        return False
    transport = tuple(getattr(sys.modules.get(mod), name) for mod, name in _TRANSPORT_ERRORS  # the client's HTTP
                      if hasattr(sys.modules.get(mod), name))                                    # library, loaded
    return isinstance(e, transport + (ConnectionError, socket.gaierror, TimeoutError))


def _describe(e: BaseException) -> str:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    if isinstance(e, HubError):
        return str(e)
    if isinstance(e, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE=1 is set (huggingface_hub's offline mode)"
    if isinstance(e, HfHubHTTPError):
        status, first = _http_status(e), (str(e).strip() or type(e).__name__).splitlines()[0]
        return f"HTTP {status}: {first}" if status and str(status) not in first else first
    if _is_unreachable(e):
        return f"no connection: {type(e).__name__}: {e}"
    return f"{type(e).__name__}: {e}"


def _http_status(e: BaseException) -> int | None:
    return getattr(getattr(e, "response", None), "status_code", None)


def push_later_hint(output_dir: str, repo_id: str | None) -> str:
    cmd = f"trainwright push {output_dir}"
    return cmd + (f" --repo-id {repo_id}" if repo_id else "")


class HubUnreachable(HubError):
    """The Hub endpoint cannot be reached (offline mode, no connection)."""


def _clean_token(token):
    return None if token == _MASKED_TOKEN else token


def _api(endpoint: str | None = None):
    from huggingface_hub import HfApi

    from . import __version__
    return HfApi(endpoint=endpoint or hub_endpoint(), library_name="trainwright", library_version=__version__)


def _create_repo(api, name: str, token, private, output_dir: str, later: str | None = None) -> str:
    """The repo's full id (``namespace/name``), created if needed; HubError / HubUnreachable otherwise. ``later``:
    what to do once the Hub can be reached (default: the ``trainwright push`` command)."""
    later = later or f"push them later with: {push_later_hint(output_dir, name)}"
    if _offline():
        raise HubUnreachable(f"Cannot reach the Hub at {api.endpoint}: HF_HUB_OFFLINE=1 is set (huggingface_hub's "
                             f"offline mode). The local files in {output_dir} are complete; {later}")
    try:
        return api.create_repo(name, token=token, private=private, exist_ok=True).repo_id
    except Exception as e:
        if _is_unreachable(e):
            raise HubUnreachable(f"Cannot reach the Hub at {api.endpoint} ({_describe(e)}). The local files in "
                                 f"{output_dir} are complete; {later}") from e
        status = _http_status(e)
        fix = {401: "check hub_token (or `hf auth login`; a token with write access)",
               403: "check that the token may write to this namespace (hub_model_id='namespace/name')",
               404: "check the namespace in hub_model_id"}.get(status, "check hub_model_id and hub_token")
        if status is not None and status >= 500 or status == 429:
            fix = "a server-side failure; try again later"
        raise HubError(f"Could not create the Hub repo {name!r} at {api.endpoint} ({_describe(e)}): {fix}.") from e


# ====================================================================== snapshots
def _ignored(rel: str, patterns) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in patterns)


def _pushable_files(folder: str, patterns) -> list[str]:
    """Relative paths (``/``-separated) of the files under ``folder`` that ``patterns`` do not exclude."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(d for d in dirnames if not _ignored(rel_dir + d, patterns))
        out.extend(rel_dir + f for f in sorted(filenames) if not _ignored(rel_dir + f, patterns))
    return out


def _place(src: str, dst: str, link: bool) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def new_staging_dir(output_dir: str) -> str:
    path = os.path.join(output_dir, f"{STAGING_PREFIX}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(path)
    return path


def clean_stale_staging(output_dir: str) -> None:
    """Remove the snapshot dirs that a dead process of this host left in ``output_dir``."""
    pattern = re.compile(rf"^{re.escape(STAGING_PREFIX)}{re.escape(_host())}-(\d+)-[0-9a-f]{{8}}$")
    try:
        names = os.listdir(output_dir)
    except OSError:
        return
    for name in names:
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid():
            try:
                os.kill(int(m.group(1)), 0)  # alive (or not ours to signal): keep
            except ProcessLookupError:
                shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
            except OSError:
                pass


def snapshot_output_dir(output_dir: str, dest: str) -> None:
    """``output_dir`` as transformers pushes it (without ``_*``, ``checkpoint-*``), into ``dest``."""
    for rel in _pushable_files(output_dir, IGNORE_PATTERNS + _OWN_IGNORE):
        _place(os.path.join(output_dir, rel), os.path.join(dest, rel), link=rel.endswith(".safetensors"))


def modeling_files(checkpoint: str) -> list[str]:
    """The files of ``checkpoint`` that transformers copies to the root of the repo (+ shards of an index)."""
    names = [n for n in MODELING_FILES if os.path.isfile(os.path.join(checkpoint, n))]
    index = os.path.join(checkpoint, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f).get("weight_map", {}).values()))
        names += [s for s in shards if os.path.isfile(os.path.join(checkpoint, s))]
    return names


def overlay_checkpoint_model(checkpoint: str, dest: str, processing_class: Any = None) -> None:
    """The checkpoint's model files over the root snapshot in ``dest`` (its manifest would no longer describe
    the weights, so it is left out), and the tokenizer saved again, as transformers does at each save."""
    stale = os.path.join(dest, MANIFEST_NAME)
    if os.path.exists(stale):
        os.remove(stale)
    for name in modeling_files(checkpoint):
        target = os.path.join(dest, name)
        if os.path.exists(target):
            os.remove(target)
        _place(os.path.join(checkpoint, name), target, link=True)
    if processing_class is not None and hasattr(processing_class, "save_pretrained"):
        processing_class.save_pretrained(dest)


def snapshot_checkpoint(checkpoint: str, dest: str) -> None:
    """Hard links to every file of a (complete, never again modified) checkpoint."""
    for rel in _pushable_files(checkpoint, []):
        _place(os.path.join(checkpoint, rel), os.path.join(dest, rel), link=True)


# ====================================================================== model card (fallback)
def minimal_model_card(model_name: str, args: dict | None = None, tags: Any = None, finetuned_from: Any = None,
                       license: Any = None,
                       language: Any = None, dataset: Any = None, **_ignored: Any) -> str:
    """A short README.md (YAML front matter + hyperparameters), used when the Trainer has no
    ``create_model_card`` and by ``trainwright push`` for a run without a README.md."""
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    for tag in ("trainwright", "generated_from_trainer"):
        if tag not in tags:
            tags.append(tag)
    dataset = [dataset] if isinstance(dataset, str) else dataset
    meta = ["---", "library_name: transformers"] + [
        f"{key}: {json.dumps(value)}" for key, value in (("license", license), ("language", language),
                                                         ("base_model", finetuned_from), ("datasets",
                                                                                          dataset)) if value]
    meta.append("tags:")
    meta += [f"- {json.dumps(t)}" for t in tags]
    meta += ["model-index:", f"- name: {json.dumps(model_name)}", "  results: []", "---", ""]
    body = [f"# {model_name}", ""]
    body.append(f"This model is a fine-tuned version of [{finetuned_from}](https://huggingface.co/{finetuned_from})."
                if finetuned_from else "This model was trained with trainwright, a drop-in transformers.Trainer.")
    args = args or {}
    keys = ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size", "seed",
            "gradient_accumulation_steps", "optim", "lr_scheduler_type", "num_train_epochs", "max_steps",
            "bf16", "fp16")
    rows = [f"- {k}: {args[k]}" for k in keys if k in args]
    if rows:
        body += ["", "## Training hyperparameters", "", "The following hyperparameters were used during training:", ""]
        body += rows
    return "\n".join(meta + body) + "\n"


# ====================================================================== the Trainer's side
class _Push:
    """One queued push: a snapshot dir and what to upload from it."""

    def __init__(self, stage: str, commit_message: str, revision, token, checkpoint_path_in_repo=None,
                 what: str = "output_dir"):
        self.stage = stage
        self.root = os.path.join(stage, "root")
        self.checkpoint = os.path.join(stage, "checkpoint")
        self.commit_message = commit_message
        self.revision = revision
        self.token = token
        self.checkpoint_path_in_repo = checkpoint_path_in_repo
        self.what = what


class HubSync:
    """The Trainer's link to its Hub repo (main process only): the repo id, the pushes in flight (transformers'
    ``push_in_progress``) and how their failures were reported."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.output_dir = os.path.abspath(args.output_dir)
        self.api = _api()
        self.repo_id: str | None = None
        self.unreachable: str | None = None  # the message, once the Hub was found unreachable at init
        self.jobs: list[futures.Future] = []
        self._warned = False
        os.makedirs(self.output_dir, exist_ok=True)
        clean_stale_staging(self.output_dir)

    @property
    def repo_name(self) -> str:
        return self.args.hub_model_id or Path(self.output_dir).name

    def create_repo(self, token: Any = None, private: Any = None) -> str:
        token = _clean_token(token if token is not None else self.args.hub_token)
        private = private if private is not None else self.args.hub_private_repo
        self.repo_id = _create_repo(self.api, self.repo_name, token, private, self.output_dir)
        self.unreachable = None
        return self.repo_id

    def busy(self) -> bool:
        return any(not j.done() for j in self.jobs)

    def wait(self) -> None:
        if self.busy():
            logger.info("Waiting for the current checkpoint push to be finished, this might take a couple of minutes.")
            futures.wait(self.jobs)
        self.jobs = [j for j in self.jobs if not j.done()]

    def new_push(self, commit_message: str, revision: Any = None, token: Any = None,
                 checkpoint_path_in_repo: Any = None,
                 what: Any = "output_dir") -> _Push:
        stage = new_staging_dir(self.output_dir)
        return _Push(stage, commit_message, revision if revision is not None else self.args.hub_revision,
                     _clean_token(token if token is not None else self.args.hub_token), checkpoint_path_in_repo, what)

    def submit(self, push: _Push) -> futures.Future:
        """Runs ``push`` in the background (after the pushes queued before it)."""
        job = self.api.run_as_future(self._run, push, True)
        self.jobs.append(job)
        return job

    def run_now(self, push: _Push) -> Any:
        return self._run(push, False)

    def _run(self, push: _Push, background: bool):
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
        quiet = background and not are_progress_bars_disabled()
        if quiet:  # as transformers: no upload progress bars in the middle of the training logs
            disable_progress_bars()
        try:
            if self.repo_id is None:
                self.create_repo(token=push.token)
            info = self.api.upload_folder(repo_id=self.repo_id, folder_path=push.root,
                                          commit_message=push.commit_message, token=push.token,
                                          revision=push.revision, ignore_patterns=list(IGNORE_PATTERNS))
            if push.checkpoint_path_in_repo:
                self.api.upload_folder(repo_id=self.repo_id, folder_path=push.checkpoint,
                                       path_in_repo=push.checkpoint_path_in_repo,
                                       commit_message=push.commit_message + ", checkpoint", token=push.token,
                                       revision=push.revision)
            return info
        except Exception as e:
            message = (f"Pushing {push.what} to the Hub at {self.api.endpoint} failed ({_describe(e)}). The local "
                       f"files in {self.output_dir} are complete; push them later with: "
                       f"{push_later_hint(self.output_dir, self.repo_id or self.repo_name)}")
            if not background:
                if isinstance(e, HubError):
                    raise
                raise (HubUnreachable if _is_unreachable(e) else HubError)(message) from e
            if self._warned:
                logger.info("%s", message)
            else:
                self._warned = True
                logger.warning("%s (training goes on; later push failures are logged at info level)", message)
            raise
        finally:
            if quiet:
                enable_progress_bars()
            shutil.rmtree(push.stage, ignore_errors=True)


class HubMixin:
    """``Trainer``'s Hub methods (transformers' names): ``init_hf_repo``, ``push_to_hub`` and the internal
    ``_push_from_checkpoint`` / ``_finish_current_push``."""

    hub_model_id: str | None = None
    _hub: HubSync | None = None

    def _hub_sync(self) -> HubSync:
        if self._hub is None:
            self._hub = HubSync(self.args)
        return self._hub

    def _init_hub(self) -> None:
        """At ``Trainer(...)``: with ``push_to_hub=True``, create the repo (main process). An unreachable Hub is
        reported once and the run trains locally; a rejected token or name raises; a server error is retried at
        the first push."""
        self.hub_model_id = None
        if not self.args.push_to_hub or not self.is_world_process_zero():
            return
        try:
            self.init_hf_repo()
        except HubUnreachable as e:
            sync = self._hub_sync()
            sync.unreachable = str(e)
            logger.error("push_to_hub=True, but training goes on without pushing. %s", e)
        except HubError as e:
            status = _http_status(e.__cause__)
            if status is None or status < 500:
                raise
            sync = self._hub_sync()
            sync._warned = True
            logger.warning("push_to_hub=True: %s Training goes on and the repo is created at the next push; if the "
                           "pushes keep failing, push later with: %s (later push failures are logged at info level)",
                           e, push_later_hint(sync.output_dir, sync.repo_name))

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Creates the repo ``args.hub_model_id`` (default: the name of ``output_dir``) if needed and sets
        ``self.hub_model_id`` to its full id. Main process only."""
        if not self.is_world_process_zero():
            return
        self.hub_model_id = self._hub_sync().create_repo(token=token, private=private)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None,
                    **kwargs: Any) -> Any:
        """Saves the model (``save_model``) and a model card in ``output_dir`` and uploads ``output_dir`` (without
        ``_*`` and ``checkpoint-*``) to the repo ``args.hub_model_id``, after the pushes in flight. Returns the
        ``CommitInfo``, or with ``blocking=False`` a ``Future`` of it. Raises ``HubError`` when it cannot push
        (the files stay saved in ``output_dir``). ``kwargs`` go to ``create_model_card``."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        model_name = kwargs.pop("model_name", None)
        if model_name is None and self.args.should_save:
            model_name = Path(self.args.output_dir).name if self.args.hub_model_id is None \
                else self.args.hub_model_id.split("/")[-1]
        token = token if token is not None else self.args.hub_token
        failure = None
        if self.hub_model_id is None and self.is_world_process_zero():
            try:
                self.init_hf_repo(token=token, private=private)
            except HubError as e:  # raised after the collective save below: every rank must take part in it
                failure = e
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        model_tags = getattr(self.model, "model_tags", None)
        if model_tags is not None:
            tags = kwargs.get("tags") or []
            tags = [tags] if isinstance(tags, str) else list(tags)
            kwargs["tags"] = tags + [t for t in model_tags if t not in tags]
        self._write_hub_model_card(model_name, **kwargs)
        if failure is not None:
            raise failure
        sync = self._hub_sync()
        sync.wait()  # transformers' _finish_current_push
        push = sync.new_push(commit_message or "End of training", revision, token, what="output_dir")
        try:
            snapshot_output_dir(self.args.output_dir, push.root)
        except BaseException:
            shutil.rmtree(push.stage, ignore_errors=True)
            raise
        return sync.run_now(push) if blocking else sync.submit(push)

    def _write_hub_model_card(self, model_name, **kwargs) -> None:
        if callable(getattr(self, "create_model_card", None)):
            self.create_model_card(model_name=model_name, **kwargs)
            return
        try:
            text = minimal_model_card(model_name or Path(self.args.output_dir).name, self.args.to_dict(), **kwargs)
            from .checkpoint.safe_fs import write_atomic
            write_atomic(os.path.join(self.args.output_dir, "README.md"), text, degrade=False)
        except OSError as e:
            logger.warning("Could not write the model card %s: %s", os.path.join(self.args.output_dir, "README.md"), e)

    def _push_after_save_model(self) -> None:
        """``save_model()`` with ``push_to_hub=True`` pushes like transformers; a failed push is logged (the model
        is saved), and a Hub found unreachable at init is not tried again."""
        if self._hub is not None and self._hub.unreachable:
            logger.info("save_model: not pushed, the Hub was unreachable (see the error above).")
            return
        try:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
        except HubError as e:
            logger.warning("save_model: the model is saved but was not pushed: %s", e)

    def _push_from_checkpoint(self, checkpoint_folder: str, state: Any = None) -> None:
        """Once a checkpoint is complete: queue a background push of the model (and of the checkpoint with
        ``hub_strategy`` ``"checkpoint"`` / ``"all_checkpoints"``); ``state``: the trainer state it was saved at."""
        args, state = self.args, self.state if state is None else state
        if not args.push_to_hub or not self.is_world_process_zero() or args.hub_strategy == "end":
            return
        sync = self._hub_sync()
        if sync.unreachable:
            return
        if self.stop_signal.received is not None:
            logger.info("Stopping on a signal: checkpoint %s stays local (not pushed).", checkpoint_folder)
            return
        if not args.hub_always_push and sync.busy():
            logger.info("The previous push to the Hub is still running: the save at step %d is not pushed "
                        "(hub_always_push=True queues every save).", state.global_step)
            return
        self.callback_handler.on_push_begin(args, state, self.control)
        if args.save_strategy == "steps":
            message = f"Training in progress, step {state.global_step}"
        else:
            message = f"Training in progress, epoch {int(state.epoch)}"
        path_in_repo = {"checkpoint": LAST_CHECKPOINT, "all_checkpoints": Path(checkpoint_folder).name}.get(
            args.hub_strategy)
        push = sync.new_push(message, checkpoint_path_in_repo=path_in_repo,
                             what=f"the save at step {state.global_step}")
        try:
            snapshot_output_dir(args.output_dir, push.root)
            overlay_checkpoint_model(checkpoint_folder, push.root, self.processing_class)
            if path_in_repo:
                snapshot_checkpoint(checkpoint_folder, push.checkpoint)
        except Exception as e:  # e.g. a full disk: the checkpoint itself is saved, only this push is skipped
            shutil.rmtree(push.stage, ignore_errors=True)
            logger.warning("Could not prepare the push of %s (%s); it is not pushed.", checkpoint_folder, e)
            return
        sync.submit(push)

    def _finish_current_push(self) -> None:
        """Wait for the pushes in flight (at the end of ``train()``, as transformers)."""
        if self._hub is not None:
            self._hub.wait()


# ====================================================================== trainwright push OUTPUT_DIR
def _saved_args(output_dir: str) -> dict:
    """The training arguments of the run in ``output_dir`` (its newest complete checkpoint), or {}."""
    from .checkpoint import TRAINING_ARGS_NAME, checkpoint_status, list_checkpoints
    candidates = [os.path.join(output_dir, TRAINING_ARGS_NAME)]
    candidates += [os.path.join(p, TRAINING_ARGS_NAME) for p in reversed(list_checkpoints(output_dir))
                   if checkpoint_status(p)[0]]
    for path in candidates:
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    return json.load(f)
            except (OSError, ValueError):
                continue
    return {}


def _stage_run_root(out: str, stage: str, complete: list[str], full_id: str, saved: dict) -> str:
    """``stage/root``: a snapshot of ``out`` with, when it lacks them, the newest complete checkpoint's model files
    and a short model card."""
    root = os.path.join(stage, "root")
    os.makedirs(root)
    snapshot_output_dir(out, root)
    has_model = os.path.isfile(os.path.join(root, "config.json")) or any(
        n.endswith(".safetensors") for n in os.listdir(root))
    if not has_model and complete:
        overlay_checkpoint_model(complete[-1], root)
    if not os.path.isfile(os.path.join(root, "README.md")):
        with open(os.path.join(root, "README.md"), "w", encoding="utf-8") as f:
            f.write(minimal_model_card(full_id.split("/")[-1], saved))
    return root


def push_directory(output_dir: Any, repo_id: str | None = None, token: str | None = None, private: bool | None = None,
                   commit_message: str = "Upload with trainwright push", revision: str | None = None,
                   checkpoints: str | None = None) -> dict:
    """``trainwright push OUTPUT_DIR``: push a finished (or offline) run as it would have pushed itself
    (docs/sharing.md). ``repo_id``, ``private``, ``revision`` default to the run's ``hub_*`` arguments (the repo
    id else to the name of ``output_dir``); ``checkpoints`` ("none", "last" as ``last-checkpoint/``, "all") to its
    ``hub_strategy``. Without a model at the root, the newest complete checkpoint's model files go there; without a
    README.md, a short card is added to the upload. Returns ``{"repo_id", "url", "commit_url", "files"}``; raises
    ``HubError`` (``HubUnreachable``: no connection) naming the endpoint and the error."""
    from .checkpoint import checkpoint_status, list_checkpoints
    from .errors import ConfigError
    out = os.path.abspath(os.fspath(output_dir))
    if not os.path.isdir(out):
        raise ConfigError(f"trainwright push: {output_dir!r} is not a directory: give the run's output_dir.")
    saved = _saved_args(out)
    repo_name = repo_id or saved.get("hub_model_id") or Path(out).name
    if checkpoints is None:
        checkpoints = {"checkpoint": "last", "all_checkpoints": "all"}.get(saved.get("hub_strategy"), "none")
    if checkpoints not in ("none", "last", "all"):
        raise ConfigError(f"trainwright push: checkpoints={checkpoints!r} must be 'none', 'last' or 'all'.")
    revision = revision if revision is not None else saved.get("hub_revision")
    private = private if private is not None else saved.get("hub_private_repo")
    token = _clean_token(token)
    api = _api()
    full_id = _create_repo(api, repo_name, token, private, out, later="run the command again once the Hub can be "
                           "reached (without HF_HUB_OFFLINE=1 / with a connection to it)")
    complete = [p for p in list_checkpoints(out) if checkpoint_status(p)[0]]
    skipped = [p for p in list_checkpoints(out) if p not in complete]
    for p in skipped:
        logger.warning("trainwright push: %s is incomplete and is not pushed.", p)
    stage = new_staging_dir(out)
    try:
        root = _stage_run_root(out, stage, complete, full_id, saved)
        files = len(_pushable_files(root, []))
        try:
            info = api.upload_folder(repo_id=full_id, folder_path=root, commit_message=commit_message,
                                     token=token, revision=revision, ignore_patterns=list(IGNORE_PATTERNS))
            chosen = complete[-1:] if checkpoints == "last" else complete if checkpoints == "all" else []
            for ckpt in chosen:
                dest = os.path.join(stage, Path(ckpt).name)
                snapshot_checkpoint(ckpt, dest)
                files += len(_pushable_files(dest, []))
                info = api.upload_folder(repo_id=full_id, folder_path=dest,
                                         path_in_repo=LAST_CHECKPOINT if checkpoints == "last" else Path(ckpt).name,
                                         commit_message=f"{commit_message}, checkpoint", token=token,
                                         revision=revision)
        except Exception as e:
            kind = HubUnreachable if _is_unreachable(e) else HubError
            raise kind(f"trainwright push: uploading {out} to {full_id} at {api.endpoint} failed ({_describe(e)}). "
                       f"Nothing local was changed; run the command again to retry.") from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"repo_id": full_id, "url": f"{api.endpoint}/{full_id}", "commit_url": getattr(info, "commit_url", None),
            "files": files}
