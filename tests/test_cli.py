"""The command line: ``python -m ctr_src train`` / ``evaluate`` (fast: tiny synthetic data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ctr_src import cli
from ctr_src.data import write_synthetic

ROWS = 2000
FIELDS = {"model", "data", "settings", "best_epoch", "epochs", "valid", "test", "parameters",
          "seconds", "versions"}


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ctr_src", *args], capture_output=True,
                          text=True, env=_env(), cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def criteo_file(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("criteo") / "sample.txt", ROWS, seed=0)


@pytest.fixture(scope="module")
def trained(criteo_file, tmp_path_factory):
    """FM trained for two epochs by a subprocess, as a user runs it."""
    out = tmp_path_factory.mktemp("run")
    r = _cli("train", "--data", f"criteo:{criteo_file}", "--model", "fm", "--epochs", "2",
             "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "FM" in r.stderr  # the progress bar, on by default
    assert "test:" in r.stdout
    return out


def _check_metrics(report: dict, model: str, epochs: int):
    assert FIELDS <= set(report)
    assert report["model"] == model
    assert report["epochs"] <= epochs and 1 <= report["best_epoch"] <= report["epochs"]
    for part in ("valid", "test"):
        assert 0.0 <= report[part]["auc"] <= 1.0
        assert report[part]["logloss"] > 0
    assert report["parameters"] > 0
    assert {"ctr_src", "torch", "python"} <= set(report["versions"])


def test_train_writes_metrics_and_checkpoint(trained, criteo_file):
    report = json.loads((trained / "metrics.json").read_text())
    _check_metrics(report, "fm", 2)
    assert report["data"] == {"kind": "criteo", "path": str(criteo_file.resolve()),
                              "max_rows": None, "dense": "bucket",
                              "min_count": 10, "hash_size": None}
    assert report["settings"]["fit"]["epochs"] == 2
    ckpt = torch.load(trained / "model.pt", weights_only=True)
    assert ckpt["model"] == "fm" and ckpt["model_kwargs"] == {"embed_dim": 16}
    assert len(ckpt["field_dims"]) == 39 and ckpt["state_dict"]
    assert not [p for p in trained.iterdir() if p.name.startswith(".")]  # no temporary files


def test_evaluate_reproduces_test_metrics(trained, tmp_path):
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--checkpoint", str(trained / "model.pt"), "--device", "cpu",
                     "--out", str(out)]) == 0
    assert json.loads(out.read_text())["test"] == json.loads(
        (trained / "metrics.json").read_text())["test"]


def test_in_process_main(criteo_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--data", f"criteo:{criteo_file}", "--model", "fm", "--epochs",
                     "1", "--max-rows", "1500", "--embed-dim", "4", "--device", "cpu",
                     "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    _check_metrics(report, "fm", 1)
    assert report["data"]["max_rows"] == 1500 and report["settings"]["model"]["embed_dim"] == 4
    assert "FM" not in capsys.readouterr().err  # --quiet: no progress bar
    assert cli.main(["evaluate", "--checkpoint", str(out / "model.pt"), "--device", "cpu",
                     "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["test"] == report["test"]
    # the same checkpoint on other data (all the rows: other vocabularies) is refused
    assert cli.main(["evaluate", "--checkpoint", str(out / "model.pt"), "--device", "cpu",
                     "--data", f"criteo:{criteo_file}"]) == 2
    assert "field_dims" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--data", "criteo:{f}", "--model", "nope"], "known models: afm, deepfm"),
    (["--data", "criteo:{f}", "--model", "din"], "use --data movielens-temporal"),
    (["--data", "criteo:/no/such/file.txt", "--model", "fm"], "no Criteo-format file"),
    (["--data", "imagenet", "--model", "fm"], "movielens, movielens-temporal or criteo:PATH"),
    (["--data", "criteo:{f}", "--model", "lr", "--embed-dim", "8"], "has no embeddings"),
    (["--data", "movielens", "--model", "lr", "--max-rows", "10"], "criteo:PATH only"),
    (["--data", "movielens", "--model", "lr", "--dense", "value"],
     "--dense: for criteo:PATH only"),
    (["--data", "movielens-temporal", "--model", "din", "--min-count", "2",
      "--hash-size", "64"], "--min-count, --hash-size: for criteo:PATH only"),
])
def test_bad_input_exits_2_with_a_clear_message(args, message, criteo_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = [a.format(f=criteo_file) for a in args]
    assert cli.main(["train", *args, "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_bad_input_from_the_shell(tmp_path):
    r = _cli("train", "--data", "criteo:/no/such/file.txt", "--model", "fm",
             "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "no Criteo-format file" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_checkpoint_and_options(tmp_path, capsys):
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "junk.pt")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse's own errors exit 2 as well
        cli.main(["train", "--data", "movielens", "--model", "fm", "--epochs", "0"])
    assert exc.value.code == 2 and "must be positive" in capsys.readouterr().err


def test_movielens_lr_one_epoch(tmp_path, capsys):
    out = tmp_path / "lr"
    assert cli.main(["train", "--data", "movielens", "--model", "lr", "--epochs", "1",
                     "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    _check_metrics(report, "lr", 1)
    assert report["data"] == {"kind": "movielens"}
    assert "lr on movielens" in capsys.readouterr().out


@pytest.mark.parametrize("dense, model, dense_fields", [
    ("value", "wide_deep", list(range(13))),
    ("both", "wide_deep", list(range(13, 26))),
    ("both", "deepfm", None),  # the paper's DeepFM takes no raw values
])
def test_criteo_loader_options(criteo_file, tmp_path, capsys, dense, model,
                               dense_fields):
    out = tmp_path / "run"
    assert cli.main(["train", "--data", f"criteo:{criteo_file}", "--model",
                     model, "--epochs", "1", "--max-rows", "800", "--dense",
                     dense, "--min-count", "3", "--hash-size", "50",
                     "--embed-dim", "4", "--device", "cpu", "--quiet",
                     "--out", str(out)]) == 0
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["data"]["dense"] == dense and ckpt["data"]["min_count"] == 3
    assert ckpt["data"]["hash_size"] == 50
    assert ckpt["model_kwargs"].get("dense_fields") == dense_fields
    # 26 hashed categorical fields of 50 indices, then 13 or 26 integer fields
    dims = ckpt["field_dims"]
    assert len(dims) == (39 if dense == "value" else 52)
    assert dims[-26:] == [50] * 26
    if dense_fields:
        width = ckpt["state_dict"]["mlp.layers.0.weight"].shape[1]
        assert width == len(dims) * 4 + 13  # F D + the 13 raw values
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["model"].get("dense_fields") == dense_fields
    printed = capsys.readouterr().out
    assert f"--dense {dense} --min-count 3 --hash-size 50" in printed
    # evaluate reads the file the same way, from the checkpoint alone ...
    ckpt_path = str(out / "model.pt")
    assert cli.main(["evaluate", "--checkpoint", ckpt_path, "--device", "cpu",
                     "--out", str(tmp_path / "e.json")]) == 0
    test = json.loads((tmp_path / "e.json").read_text())["test"]
    assert test == report["test"]
    # ... and with --data naming the same file again
    assert cli.main(["evaluate", "--checkpoint", ckpt_path, "--device", "cpu",
                     "--data", f"criteo:{criteo_file}", "--max-rows", "800",
                     "--out", str(tmp_path / "f.json")]) == 0
    test = json.loads((tmp_path / "f.json").read_text())["test"]
    assert test == report["test"]


def test_criteo_loader_options_are_checked(criteo_file, tmp_path, capsys):
    base = ["train", "--data", f"criteo:{criteo_file}", "--model", "fm",
            "--out", str(tmp_path / "run")]
    for extra, message in ((["--dense", "log"], "invalid choice: 'log'"),
                           (["--min-count", "0"], "must be positive"),
                           (["--hash-size", "1"], "must be 2 or more")):
        with pytest.raises(SystemExit) as exc:
            cli.main(base + extra)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
