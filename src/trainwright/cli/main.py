"""``trainwright COMMAND ...``: the argument parser and the dispatch to the commands.

Options may come before or after CONFIG.yaml (``train --set a=b CONFIG.yaml`` as well as
``train CONFIG.yaml --set a=b``). A trainwright error prints one line and exits with 1 (``--traceback``
shows the whole traceback); Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from ..errors import ConfigError, TrainwrightError

CONFIG_COMMANDS = ("train", "evaluate", "predict")
CONFIG_HELP = "\0config-help"  # replaced by the config keys when --help is printed (see _Formatter)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout, and builds the config-key listing only when help is printed."""

    def add_text(self, text):
        if text == CONFIG_HELP:
            from .template import config_help
            text = config_help()
        super().add_text(text)


def _add_config_args(p) -> None:
    p.add_argument("config", nargs="?", metavar="CONFIG.yaml")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.learning_rate=1e-4 data.train_limit=500 "
                        "(dotted keys; values are read as YAML)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model as described by CONFIG.yaml", formatter_class=_Formatter,
                       description="Load the data, tokenize (cached), train, evaluate, and save the model, the "
                                   "tokenizer and eval_results.json to output_dir.", epilog=CONFIG_HELP)
    _add_config_args(p)
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="resume from the latest checkpoint in output_dir, or from PATH")


def _add_evaluate_predict(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained model on the validation (or test) split",
                       formatter_class=_Formatter, epilog=CONFIG_HELP,
                       description="Evaluate the model in output_dir (or --model DIR); prints the metrics and "
                                   "writes eval_results.json. The split needs labels (use predict for one without).")
    _add_config_args(p)
    p.add_argument("--model", metavar="DIR", help="model directory (default: the config's output_dir)")
    p.add_argument("--split", choices=("validation", "test"), help="which split (default: validation)")
    p.add_argument("--output", metavar="FILE.json", help="where to write the metrics "
                                                         "(default: <output_dir>/eval_results.json)")

    p = sub.add_parser("predict", help="write predictions for the test (or validation) split",
                       formatter_class=_Formatter, epilog=CONFIG_HELP,
                       description="Predict with the model in output_dir (or --model DIR) and write one row per "
                                   "input: id, predicted label and probability per label (classification), the "
                                   "tag of every word (token-classification) or the generated text (causal-lm, "
                                   "instruction, seq2seq). The split may have no labels.")
    _add_config_args(p)
    p.add_argument("--model", metavar="DIR", help="model directory (default: the config's output_dir)")
    p.add_argument("--split", choices=("test", "validation"), help="which split (default: test if configured, "
                                                                     "else validation)")
    p.add_argument("--output", metavar="FILE.csv|FILE.jsonl",
                   help="predictions file (default: <output_dir>/predictions.csv)")


def _add_other_commands(sub) -> None:
    p = sub.add_parser("init", help="print a commented config template for a task",
                       description="Print a YAML config for TASK with every key, its default and a one-line "
                                   "comment; point data.train at your data and run `trainwright train` on it.")
    p.add_argument("task", metavar="TASK", help="text-classification, regression, token-classification, "
                                                "causal-lm, instruction or seq2seq")
    p.add_argument("--output", metavar="FILE.yaml", help="write the template to FILE.yaml (not overwritten) "
                                                         "instead of printing it")

    p = sub.add_parser("report", help="write an HTML report of one or more run directories",
                       description="Summarise training runs (loss curves, metrics, timing) in one HTML file.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--output", metavar="FILE", help="report file or directory (default: one run: its own "
                                                    "directory; several: report.html in the current directory)")

    p = sub.add_parser("demo", help="fine-tune MiniLM on the VADER sentiment lexicon (a few minutes on CPU)",
                       description="Fine-tunes the bundled MiniLM to tell positive from negative words, using the "
                                   "VADER lexicon shipped with vaderSentiment, prints the held-out accuracy and "
                                   "a few predictions on words the lexicon does not have, and saves the model.")
    p.add_argument("--output-dir", default=os.path.join("runs", "demo"), help="where to save (default: runs/demo)")
    p.add_argument("--epochs", type=float, default=2, help="training epochs (default: 2)")
    p.add_argument("--quick", action="store_true", help="train on a small subset (seconds; for tests)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split and of training (default: 42)")


def _add_push(sub) -> None:
    p = sub.add_parser("push", help="push a run's model (and checkpoints) to the Hugging Face Hub",
                       description="Upload OUTPUT_DIR as the run would have pushed itself with push_to_hub=True "
                                   "(see docs/sharing.md): for a run trained offline, or after a failed upload.")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="the run's output_dir")
    p.add_argument("--repo-id", default=None, help="Hub repository (default: the run's hub_model_id, else the "
                                                   "directory's name)")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in token)")
    p.add_argument("--private", action="store_true", default=None, help="create the repository as private")
    p.add_argument("--revision", default=None, help="branch to push to")
    p.add_argument("--commit-message", default="Upload with trainwright push", help="the commit message")
    p.add_argument("--checkpoints", choices=("none", "last", "all"), default=None,
                   help="also push checkpoints: none, last (as last-checkpoint/) or all (default: per the run's "
                        "hub_strategy)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(
        prog="trainwright",
        description="Fine-tune, evaluate and use transformer models from a YAML config (see docs/cli.md).")
    parser.add_argument("--version", action="version", version=f"trainwright {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full Python traceback of a trainwright error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_evaluate_predict(sub)
    _add_other_commands(sub)
    _add_push(sub)
    return parser


def _find_config(parser, args) -> None:
    """CONFIG.yaml wherever it was given: ``--set`` (one or more values) also takes a path that follows it,
    and ``train --resume CONFIG.yaml`` reads the path as --resume's value."""
    if args.command not in CONFIG_COMMANDS or args.config is not None:
        return
    paths = [item for item in args.overrides if "=" not in item]
    if paths:
        args.config = paths[0]
        args.overrides.remove(paths[0])
    elif args.command == "train" and isinstance(args.resume, str) and args.resume.lower().endswith((".yaml", ".yml")):
        args.config, args.resume = args.resume, True  # `train --resume CONFIG.yaml`
    else:
        parser.error(f"{args.command}: the CONFIG.yaml argument is required")


def run_init(task: str, output: str | None = None) -> str:
    """``trainwright init TASK``: the template, printed or written to a new file."""
    from .template import config_template
    text = config_template(task)
    if output is None:
        print(text, end="", flush=True)
        return text
    if os.path.exists(output):
        raise ConfigError(f"--output {output} already exists: choose another file name or delete it first.")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"Config template for {task} written to {output}", flush=True)
    return text


def _dispatch(args) -> int:
    if args.command in CONFIG_COMMANDS:
        from .commands import run_evaluate, run_predict, run_train
        from .config import load_config
        cfg = load_config(args.config, args.overrides)
        if args.command == "train":
            run_train(cfg, resume=args.resume)
        elif args.command == "evaluate":
            run_evaluate(cfg, args.model, args.split, args.output)
        else:
            run_predict(cfg, args.model, args.split, args.output)
    elif args.command == "init":
        run_init(args.task, args.output)
    elif args.command == "report":
        from ..report import report_command
        return int(report_command(args.run_dirs, args.output) or 0)
    elif args.command == "push":
        from ..hub import push_directory
        pushed = push_directory(args.output_dir, repo_id=args.repo_id, token=args.token, private=args.private,
                                commit_message=args.commit_message, revision=args.revision,
                                checkpoints=args.checkpoints)
        print(f"Pushed {pushed['files']} files to {pushed['url']} ({pushed['commit_url']})", flush=True)
    elif args.command == "demo":
        from .demo import run_demo
        run_demo(output_dir=args.output_dir, epochs=args.epochs, quick=args.quick, seed=args.seed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _find_config(parser, args)
    if args.command == "demo":
        # Idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning threads
        # make every step several times slower. Must be set before torch is imported; export it to override.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    start = time.time()
    from ..verbosity import show_info
    restore_log_level = show_info()  # the training block and notices (INFO); a config's log_level decides
    try:
        return _dispatch(args)
    except TrainwrightError as e:
        if args.traceback:
            raise
        print(f"trainwright {args.command}: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"trainwright {args.command}: interrupted after {time.time() - start:.0f}s.", file=sys.stderr)
        return 130
    finally:
        restore_log_level()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
