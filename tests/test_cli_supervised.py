"""``stepkit fit --step supervised`` learns the digits with the CLI's default network."""

import json

from test_cli import run_cli


def test_supervised_passes_95_percent_validation_accuracy_in_5_epochs(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("fit", "--step", "supervised", "--epochs", "5", "--verbose", "0",
                   "--out", out, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "1797 samples of shape (28, 28, 1), 10 classes" in proc.stdout
    assert "validating on 359 of them" in proc.stdout  # 0.2 by default
    records = json.loads((out / "history.json").read_text())
    last = records[-1]
    assert len(records) == 5 and last["val_accuracy"] >= 0.95, records
    assert f"  validation   accuracy {last['val_accuracy']:.4g}, loss " in proc.stdout
    assert f"  train        accuracy {last['accuracy']:.4g}, loss " in proc.stdout
    assert json.loads((out / "run.json").read_text())["validation_split"] == 0.2


def test_validation_split_0_turns_validation_off(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("fit", "--step", "supervised", "--epochs", "1", "--limit", "64",
                   "--image-size", "8", "--verbose", "0", "--validation-split", "0",
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "no validation" in proc.stdout and "  validation " not in proc.stdout
    assert not any(k.startswith("val_") for k in json.loads(
        (out / "history.json").read_text())[0])
