"""Sharing on the Hub, tested over HTTP: ``huggingface_hub``'s real client talks to ``hub_server.HubServer`` (a local
server speaking the Hub's create-repo / preupload / LFS / commit API) and the files that arrive are compared with the
local ones. Nothing of ``huggingface_hub`` is mocked; the tests only set the configuration it reads at import
(``constants.HF_HUB_OFFLINE``, which conftest turns on for the whole suite, ``constants.ENDPOINT`` and, for the LFS
protocol, ``constants.HF_HUB_DISABLE_XET``), as setting those variables before starting Python would."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading

import pytest

from hub_server import HubServer
from trainwright import HubError, Trainer, TrainerCallback, TrainingArguments
from trainwright.checkpoint import checkpoint_status
from trainwright.errors import ConfigError

REPO = "tiny-sst2"


@pytest.fixture
def online(monkeypatch):
    import huggingface_hub.constants as C
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


@pytest.fixture
def hub(tmp_path, monkeypatch, online):
    import huggingface_hub.constants as C
    server = HubServer(tmp_path / "hub").start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(C, "ENDPOINT", server.url)  # any other huggingface_hub call stays local too
    yield server
    server.stop()


@pytest.fixture
def lfs(monkeypatch):
    """Plain git-LFS uploads: without Xet, and the server asks for LFS for the weights."""
    import huggingface_hub.constants as C
    monkeypatch.setattr(C, "HF_HUB_DISABLE_XET", True)


def make_trainer(out, make_tiny_model, sst2_small, tokenizer, callbacks=None, **kw):
    train, _ = sst2_small
    kw = {"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 8, "logging_steps": 2,
          "learning_rate": 1e-3, "disable_tqdm": True, "write_report": False, **kw}
    args = TrainingArguments(output_dir=str(out), **kw)
    return Trainer(model=make_tiny_model(), args=args, train_dataset=train, processing_class=tokenizer,
                   callbacks=callbacks)


def local_files(folder) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, folder).replace(os.sep, "/")] = open(full, "rb").read()
    return out


def no_staging_left(out):
    return not [n for n in os.listdir(out) if n.startswith("_hub_push")]


def hub_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "trainwright" and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------- hub_strategy
@pytest.mark.parametrize("transfer", ["regular", "lfs"])
def test_every_save_pushes_the_model_of_each_save(tmp_path, hub, request, transfer, make_tiny_model, sst2_small,
                                                  tokenizer):
    if transfer == "lfs":
        request.getfixturevalue("lfs")
        hub.lfs_suffixes = (".safetensors",)
    out = tmp_path / "run"
    trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer, push_to_hub=True, hub_model_id=REPO,
                           hub_always_push=True)
    assert trainer.hub_model_id == f"tester/{REPO}"
    trainer.train()
    repo = f"tester/{REPO}"
    assert hub.commit_messages(repo) == ["Training in progress, step 2", "Training in progress, step 4"]
    got = hub.files(repo)
    ckpt = local_files(out / "checkpoint-4")
    for name in ("config.json", "model.safetensors", "training_args.json", "tokenizer.json", "tokenizer_config.json"):
        assert got[name] == ckpt[name], name
    assert "metrics.jsonl" in got
    assert not any(p.startswith(("checkpoint-", "_", "last-checkpoint")) for p in got)
    assert "trainwright_checkpoint.json" not in got  # a root manifest would not describe these weights
    assert no_staging_left(out)
    if transfer == "lfs":
        assert any(m == "PUT" and p.startswith("/lfs-objects/") for m, p, _ in hub.requests)
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(hub.repo_dir(repo))  # the pushed model loads
    assert model.config.num_labels == 2


@pytest.mark.slow
def test_checkpoint_strategy_pushes_a_resumable_last_checkpoint(tmp_path, hub, make_tiny_model, sst2_small,
                                                               tokenizer):
    out = tmp_path / "run"
    trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer, push_to_hub=True, hub_model_id=REPO,
                           hub_strategy="checkpoint", hub_always_push=True)
    trainer.train()
    repo = f"tester/{REPO}"
    assert hub.commit_messages(repo) == ["Training in progress, step 2", "Training in progress, step 2, checkpoint",
                                         "Training in progress, step 4", "Training in progress, step 4, checkpoint"]
    got = hub.files(repo)
    pushed = {p[len("last-checkpoint/"):]: v for p, v in got.items() if p.startswith("last-checkpoint/")}
    assert pushed == local_files(out / "checkpoint-4")
    # the pushed checkpoint is complete: a new run resumes from it
    last = os.path.join(hub.repo_dir(repo), "last-checkpoint")
    assert checkpoint_status(last)[0]
    again = make_trainer(tmp_path / "again", make_tiny_model, sst2_small, tokenizer, max_steps=6)
    again.train(resume_from_checkpoint=last)
    assert again.state.global_step == 6


@pytest.mark.slow
def test_all_checkpoints_pushes_each_checkpoint_even_once_rotated_away(tmp_path, hub, make_tiny_model, sst2_small,
                                                                      tokenizer):
    out = tmp_path / "run"
    trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer, push_to_hub=True, hub_model_id=REPO,
                           hub_strategy="all_checkpoints", hub_always_push=True, save_total_limit=1)
    trainer.train()
    assert sorted(os.listdir(out)).count("checkpoint-2") == 0  # rotated away locally
    got = hub.files(f"tester/{REPO}")
    for step in (2, 4):
        prefix = f"checkpoint-{step}/"
        files = {p[len(prefix):]: v for p, v in got.items() if p.startswith(prefix)}
        manifest = json.loads(files["trainwright_checkpoint.json"])
        for entry in manifest["files"]:  # every file of the snapshot arrived whole
            assert hashlib.sha256(files[entry["path"]]).hexdigest() == entry["sha256"], entry["path"]
    assert {p[len("checkpoint-4/"):]: v for p, v in got.items() if p.startswith("checkpoint-4/")} == \
        local_files(out / "checkpoint-4")
    assert "Training in progress, step 4, checkpoint" in hub.commit_messages()


@pytest.mark.slow
def test_end_strategy_pushes_on_save_model_and_push_to_hub_only(tmp_path, hub, make_tiny_model, sst2_small,
                                                                tokenizer):
    class CountPushes(TrainerCallback):
        pushes = 0

        def on_push_begin(self, args, state, control, **kwargs):
            CountPushes.pushes += 1

    out = tmp_path / "run"
    trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer, push_to_hub=True, hub_model_id=REPO,
                           hub_strategy="end", callbacks=[CountPushes()])
    trainer.train()
    repo = f"tester/{REPO}"
    assert hub.commit_messages(repo) == [] and CountPushes.pushes == 0
    trainer.save_model()
    assert hub.commit_messages(repo) == ["Model save"]
    info = trainer.push_to_hub(language="en", license="apache-2.0")
    assert hub.commit_messages(repo) == ["Model save", "End of training"]
    assert info.commit_url.startswith(hub.url)
    assert CountPushes.pushes == 2
    got = hub.files(repo)
    local = local_files(out)
    assert got["model.safetensors"] == local["model.safetensors"] and got["README.md"] == local["README.md"]
    assert not any(p.startswith("checkpoint-") for p in got)
    from huggingface_hub import ModelCard
    card = ModelCard.load(os.path.join(hub.repo_dir(repo), "README.md"))
    assert card.data.license == "apache-2.0"
    future = trainer.push_to_hub(commit_message="again", blocking=False)
    assert future.result().commit_url.startswith(hub.url)
    assert hub.commits[-1]["message"] == "again"
    # the weights did not change: not sent again (the card lost its license, the save's manifest is new)
    assert hub.commits[-1]["added"] == ["README.md", "trainwright_checkpoint.json"]
    assert no_staging_left(out)


def test_push_to_hub_without_push_to_hub_argument_creates_the_repo(tmp_path, hub, make_tiny_model, sst2_small,
                                                                   tokenizer):
    out = tmp_path / "my-model"
    trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer)
    assert trainer.hub_model_id is None and hub.repos == {}
    trainer.push_to_hub(commit_message="first upload")
    assert trainer.hub_model_id == "tester/my-model"
    assert hub.commit_messages("tester/my-model") == ["first upload"]
    assert hub.files("tester/my-model")["model.safetensors"] == (out / "model.safetensors").read_bytes()


def test_save_while_a_push_runs_is_not_pushed_unless_hub_always_push(tmp_path, hub, make_tiny_model, sst2_small,
                                                                    tokenizer):
    hub.commit_gate = threading.Event()

    class ReleaseAt4(TrainerCallback):  # the first upload is still running when step 4 is saved
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                hub.commit_gate.set()

    trainer = make_trainer(tmp_path / "run", make_tiny_model, sst2_small, tokenizer, push_to_hub=True,
                           hub_model_id=REPO, callbacks=[ReleaseAt4()])
    trainer.train()  # waits at its end for the step-2 push
    assert hub.commit_messages() == ["Training in progress, step 2"]
    assert hub.files(f"tester/{REPO}")["model.safetensors"] == \
        (tmp_path / "run" / "checkpoint-2" / "model.safetensors").read_bytes()


def test_private_repo_revision_and_token_and_the_token_is_never_pushed(tmp_path, hub, make_tiny_model, sst2_small,
                                                                      tokenizer):
    hub.token = "hf_secret"
    out = tmp_path / "run"
    trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer, push_to_hub=True, hub_model_id="org/tiny",
                           hub_private_repo=True, hub_revision="dev", hub_token="hf_secret", max_steps=2)
    trainer.train()
    assert hub.repos["org/tiny"]["private"] is True
    got = hub.files("org/tiny", revision="dev")
    assert "model.safetensors" in got and hub.files("org/tiny") == {}
    for name, data in got.items():
        assert b"hf_secret" not in data, name
    assert json.loads(got["training_args.json"])["hub_token"] == "<HUB_TOKEN>"
    assert b"hf_secret" not in (out / "checkpoint-2" / "training_args.json").read_bytes()


# ---------------------------------------------------------------------- failures
def test_a_server_answering_500_never_fails_training(tmp_path, hub, caplog, make_tiny_model, sst2_small, tokenizer):
    hub.fail_status = 500
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="trainwright"):
        trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer, push_to_hub=True, hub_model_id=REPO,
                               hub_always_push=True)
        result = trainer.train()
    assert result.global_step == 4
    warned = hub_warnings(caplog)
    assert len(warned) == 1, warned
    assert hub.url in warned[0] and "500" in warned[0] and f"trainwright push {out}" in warned[0]
    assert all(checkpoint_status(out / f"checkpoint-{s}")[0] for s in (2, 4))
    assert no_staging_left(out) and hub.commits == []
    with pytest.raises(HubError, match="500") as e:
        trainer.push_to_hub()
    assert hub.url in str(e.value)
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()  # saved before the push failed


def test_a_failed_background_commit_is_one_warning_and_lfs_objects_were_sent(tmp_path, hub, lfs, caplog,
                                                                           make_tiny_model, sst2_small, tokenizer):
    hub.lfs_suffixes = (".safetensors",)
    hub.fail_status, hub.fail_paths = 500, {"/commit/"}
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="trainwright"):
        trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer, push_to_hub=True, hub_model_id=REPO,
                               hub_always_push=True)
        trainer.train()
    warned = hub_warnings(caplog)
    assert len(warned) == 1 and hub.url in warned[0] and "500" in warned[0], warned
    assert hub.lfs_objects and hub.commits == []
    assert all(checkpoint_status(out / f"checkpoint-{s}")[0] for s in (2, 4)) and no_staging_left(out)


def test_a_rejected_token_fails_before_training(tmp_path, hub, make_tiny_model, sst2_small, tokenizer):
    hub.token = "hf_right"
    with pytest.raises(HubError, match="hub_token") as e:
        make_trainer(tmp_path / "run", make_tiny_model, sst2_small, tokenizer, push_to_hub=True, hub_token="hf_wrong")
    assert hub.url in str(e.value) and "401" in str(e.value)


# ---------------------------------------------------------------------- offline, then trainwright push
@pytest.mark.slow
def test_offline_run_trains_says_once_how_to_push_later_and_push_directory_does_it(tmp_path, monkeypatch, caplog,
                                                                                  make_tiny_model, sst2_small,
                                                                                  tokenizer):
    import huggingface_hub.constants as C
    assert C.HF_HUB_OFFLINE  # as the whole suite runs
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="trainwright"):
        trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer, push_to_hub=True, hub_model_id=REPO,
                               hub_strategy="checkpoint")
        trainer.train()
        trainer.save_model()
    errors = [r.getMessage() for r in caplog.records if r.name == "trainwright" and r.levelno >= logging.WARNING]
    assert len(errors) == 1, errors
    assert "HF_HUB_OFFLINE" in errors[0] and f"trainwright push {out} --repo-id {REPO}" in errors[0]
    from trainwright.hub import hub_endpoint
    assert f"Cannot reach the Hub at {hub_endpoint()}" in errors[0]
    with pytest.raises(HubError, match="trainwright push"):
        trainer.push_to_hub()
    assert no_staging_left(out)

    # later, online: the command pushes what the run would have pushed
    from trainwright.hub import push_directory
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    with HubServer(tmp_path / "hub") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        result = push_directory(out)
        assert result["repo_id"] == f"tester/{REPO}"  # from the run's hub_model_id
        got = server.files(f"tester/{REPO}")
    local = local_files(out)
    for name in ("model.safetensors", "config.json", "README.md", "tokenizer.json"):
        assert got[name] == local[name], name
    assert {p[len("last-checkpoint/"):]: v for p, v in got.items() if p.startswith("last-checkpoint/")} == \
        local_files(out / "checkpoint-4")  # hub_strategy="checkpoint" -> last-checkpoint/
    assert no_staging_left(out)


def test_closed_port_is_reported_once_with_the_endpoint(tmp_path, monkeypatch, online, caplog, make_tiny_model,
                                                        sst2_small, tokenizer):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with caplog.at_level(logging.INFO, logger="trainwright"):
        trainer = make_trainer(tmp_path / "run", make_tiny_model, sst2_small, tokenizer, push_to_hub=True)
        assert trainer.train().global_step == 4
    errors = [r.getMessage() for r in caplog.records if r.name == "trainwright" and r.levelno >= logging.WARNING]
    assert len(errors) == 1 and endpoint in errors[0] and "trainwright push" in errors[0], errors
    from trainwright.hub import HubUnreachable, push_directory
    with pytest.raises(HubUnreachable, match=re.escape(endpoint)) as e:
        push_directory(tmp_path / "run")
    assert "run the command again" in str(e.value)


@pytest.mark.slow
def test_push_directory_of_a_run_with_only_checkpoints(tmp_path, hub, make_tiny_model, sst2_small, tokenizer):
    out = tmp_path / "run"
    make_trainer(out, make_tiny_model, sst2_small, tokenizer).train()  # no save_model: checkpoints only
    os.makedirs(out / "checkpoint-6")  # an incomplete checkpoint (no manifest) is never pushed
    result = push_directory_all(out)
    got = hub.files(result["repo_id"])
    assert result["repo_id"] == "tester/run" and hub.commit_messages()[0] == "Upload with trainwright push"
    assert got["model.safetensors"] == (out / "checkpoint-4" / "model.safetensors").read_bytes()
    assert "README.md" in got and not (out / "README.md").exists()  # the card is added to the upload only
    assert {p.split("/")[0] for p in got if p.startswith("checkpoint-")} == {"checkpoint-2", "checkpoint-4"}


def push_directory_all(out):
    from trainwright.hub import push_directory
    return push_directory(out, checkpoints="all")


# ---------------------------------------------------------------------- arguments
def test_hub_arguments_are_validated_and_the_token_is_masked():
    with pytest.raises(ConfigError, match="hub_strategy") as e:
        TrainingArguments("out", push_to_hub=True, hub_strategy="every_step")
    assert "every_save" in str(e.value)
    args = TrainingArguments("out", push_to_hub=True, hub_token="hf_secret", hub_strategy="checkpoint")
    assert args.to_dict()["hub_token"] == "<HUB_TOKEN>" and "hf_secret" not in args.to_json_string()
    assert TrainingArguments.from_dict(args.to_dict()).hub_token is None
    with pytest.raises(ConfigError, match="hub_model_id"):
        TrainingArguments("out", push_to_hub_model_id="x")


def test_the_push_command_uploads_a_run(tmp_path, hub, make_tiny_model, sst2_small, tokenizer, capsys):
    """`trainwright push OUTPUT_DIR --repo-id ... --checkpoints last`: the CLI wiring of push_directory."""
    from trainwright.cli import main
    out = tmp_path / "run"
    trainer = make_trainer(out, make_tiny_model, sst2_small, tokenizer)  # push_to_hub off: trained "offline"
    trainer.train()
    trainer.save_model()
    assert main(["push", str(out), "--repo-id", "cli-run", "--checkpoints", "last"]) == 0
    assert "Pushed" in capsys.readouterr().out
    got = hub.files("tester/cli-run")
    local = local_files(out)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert got[name] == local[name], name
    assert any(p.startswith("last-checkpoint/") for p in got)
    assert main(["push", str(tmp_path / "missing")]) == 1  # a clear one-line error, not a traceback
