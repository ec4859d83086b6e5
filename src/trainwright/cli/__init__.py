"""The ``trainwright`` command line: an application built on the library, never imported by it.

``trainwright train CONFIG.yaml`` runs the usual fine-tuning script in one command: load the data files,
tokenize them with ``datasets.map`` (cached, so a second run skips it), build the model with its head and
labels, train with :class:`trainwright.Trainer`, evaluate, and save the model, the tokenizer and
``eval_results.json`` in ``output_dir``. Every config mistake is reported before training starts. See docs/cli.md.

Architecture: one module per concern, imports go one way (no cycles)::

    main ──> commands ──> data ──> config ──> keys, models, tasks/, peft
      │                                       (tasks/ ──> keys; peft ──> keys, models; models imports nothing of
      │                                        cli/)
      ├──> template ──> keys, tasks/   (--help's key listing and `trainwright init`)
      └──> demo                         (`trainwright demo`: a plain Trainer script, no config)

- ``main``: argparse and dispatch; ``main()`` is the console entry point (``trainwright.cli:main``).
- ``keys``: the config keys of every section with their defaults and one-line help; the checker, ``--help``
  and ``init`` all read these tables.
- ``config``: YAML loading, ``--set`` overrides, :class:`~.config.RunConfig` (all the checks).
- ``models``: ``model:`` / ``tokenizer:`` resolution and loading, ``model_config:`` models.
- ``peft``: the ``peft:`` section (a peft config, checked when the config is read), ``get_peft_model``, and a saved
  adapter loaded back onto its base for ``evaluate`` / ``predict``.
- ``data``: the splits (files, ``save_to_disk``, Hub), validation rows, limits, column checks, the
  tokenization cache.
- ``commands``: ``train``, ``evaluate``, ``predict``.
- ``tasks/``: one module per task (classification and regression, token classification, causal LM, instruction,
  seq2seq); everything task-specific is a hook of :class:`~.tasks.base.Task`.
- ``report`` is the library's (:func:`trainwright.report.report_command`); the CLI only dispatches to it.

The library (everything outside this package) never imports ``trainwright.cli``.
"""
from .main import main

__all__ = ["main"]
