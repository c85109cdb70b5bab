"""Data-parallel ``fit`` under torchrun (ctr_src.distributed, issue 16 item 6).

The main test starts ``torchrun --nproc_per_node=2`` (gloo, CPU, 127.0.0.1)
on ``tests/ddp_worker.py`` and checks that the two ranks end where a
one-process ``fit`` on the same data, seed and global batch ends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctr_src import distributed
from ctr_src.data import TensorData, write_synthetic
from ctr_src.train import fit

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")


def _worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    # this checkout's ctr_src in the children, whatever the cwd or the
    # editable install point to; one thread each
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(
                   [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for k in distributed.ENV_VARS:  # torchrun sets them for its children
        env.pop(k, None)
    return env


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 ARGS`` on 127.0.0.1, a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
           "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", *args]
    run = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run the worker on 2 gloo processes; their saved results."""
    out = tmp_path_factory.mktemp("ddp")
    _torchrun(str(WORKER), str(out))
    return {r: torch.load(out / f"rank{r}.pt") for r in (0, 1)}, out


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(two_ranks):
    ranks, _ = two_ranks
    w = _worker()
    train, valid = w.make_data()
    # the split the worker's comment promises: 7 batches of 45 (23 + 22
    # rows per rank) and a last batch of 1 row (rank 1's shard empty)
    assert len(train) % w.SETTINGS["batch_size"] == 1
    model = w.build()
    history = fit(model, train, valid, **w.SETTINGS)
    assert history.stopped_early and history.best_epoch < len(history)
    state = model.state_dict()
    for r, got in ranks.items():
        assert got["world_size"] == 2
        assert len(got["records"]) == len(history)
        assert got["best_epoch"] == history.best_epoch
        assert got["stopped_early"] == history.stopped_early
        # the ranks hold the same weights, bit for bit: DDP gives every
        # rank the same averaged gradient, and they restore the same epoch
        for k, v in got["state"].items():
            assert torch.equal(v, ranks[0]["state"][k]), (r, k)
        # the one-process run sums each batch's gradient in another order
        # (two shard means, weighted, then averaged), so the weights differ
        # by float32 rounding: 2.4e-7 at most, measured, after 56 Adam
        # steps of lr 0.03. 1e-5 leaves room for another CPU's rounding;
        # a wrong shard weighting moves them by 0.3 (measured)
        for k, v in state.items():
            torch.testing.assert_close(got["state"][k], v, rtol=0, atol=1e-5,
                                       msg=lambda m: f"{k}: {m}")
        # the reported loss is the mean over all the rows, as in one process
        ours = [h["train_loss"] for h in history]
        theirs = [h["train_loss"] for h in got["records"]]
        assert theirs == pytest.approx(ours, rel=1e-6)
        assert [h["valid_auc"] for h in got["records"]] == pytest.approx(
            [h["valid_auc"] for h in history], abs=1e-6)


@pytest.mark.slow
def test_ranks_with_different_settings_all_raise(two_ranks):
    _, out = two_ranks
    for r in (0, 1):
        text = (out / f"error{r}.txt").read_text()
        assert "different batch_size" in text
        assert "rank 0: batch_size=40; rank 1: batch_size=41" in text


@pytest.mark.slow
def test_command_line_under_torchrun(tmp_path):
    data = write_synthetic(tmp_path / "sample.txt", 2000, seed=0)
    args = ["train", "--data", f"criteo:{data}", "--model", "fm",
            "--epochs", "2", "--device", "cpu", "--quiet"]
    run = _torchrun("-m", "ctr_src", *args, "--out", str(tmp_path / "ddp"))
    assert run.stdout.count("wrote") == 1  # rank 0 alone reports and writes
    one = subprocess.run([sys.executable, "-m", "ctr_src", *args, "--out",
                          str(tmp_path / "one")], env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    ddp, ref = (json.loads((tmp_path / d / "metrics.json").read_text())
                for d in ("ddp", "one"))
    assert (ddp["settings"]["processes"], ref["settings"]["processes"]) == (
        2, 1)
    assert (ddp["epochs"], ddp["best_epoch"]) == (ref["epochs"],
                                                  ref["best_epoch"])
    # the same training up to float rounding (see the test above)
    assert ddp["test"]["auc"] == pytest.approx(ref["test"]["auc"], abs=1e-5)
    assert ddp["test"]["logloss"] == pytest.approx(ref["test"]["logloss"],
                                                   abs=1e-5)


def _data(n=10):
    return TensorData(fields=torch.arange(n).reshape(n, 1) % 3,
                      label=torch.arange(n) % 2 == 0)


@pytest.mark.parametrize("n, batch_size, world", [(10, 4, 2), (10, 4, 3),
                                                  (7, 7, 2), (5, 2, 4)])
def test_shards_put_together_are_the_batches(n, batch_size, world):
    data = _data(n)
    whole = list(data.batches(batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(3)))
    parts = [list(data.batches(batch_size, shuffle=True,
                               generator=torch.Generator().manual_seed(3),
                               shard=(r, world))) for r in range(world)]
    assert all(len(p) == len(whole) for p in parts)
    for b, batch in enumerate(whole):
        sizes = [len(p[b]["fields"]) for p in parts]
        assert max(sizes) - min(sizes) <= 1  # contiguous, near-equal
        joined = torch.cat([p[b]["fields"] for p in parts])
        assert torch.equal(joined, batch["fields"])


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard_is_refused(shard):
    with pytest.raises(ValueError, match="rank, world_size"):
        next(_data().batches(2, shard=shard))


@pytest.fixture
def no_torchrun(monkeypatch):
    for k in distributed.ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_without_torchrun_one_process(no_torchrun):
    assert not distributed.launched()
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    with distributed.process_group() as joined:
        assert joined is False
    with pytest.raises(ValueError, match="not started by torchrun"):
        distributed.setup()


def test_half_set_environment_is_named(no_torchrun):
    no_torchrun.setenv("RANK", "0")
    no_torchrun.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError) as err:
        distributed.launched()
    msg = str(err.value)
    assert "LOCAL_RANK, MASTER_ADDR, MASTER_PORT" in msg and "torchrun" in msg
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        with distributed.process_group():
            pass


def _torchrun_env(mp, **kw):
    env = dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", **kw)
    for k, v in env.items():
        mp.setenv(k, v)


@pytest.mark.parametrize("rank, world, match", [
    ("2", "2", "0..WORLD_SIZE-1"), ("0", "0", "0..WORLD_SIZE-1"),
    ("x", "2", "RANK='x' is not a non-negative integer")])
def test_bad_rank_or_world_size(no_torchrun, rank, world, match):
    _torchrun_env(no_torchrun)
    no_torchrun.setenv("RANK", rank)
    no_torchrun.setenv("WORLD_SIZE", world)
    with pytest.raises(ValueError, match=match):
        distributed.setup()


def test_setup_refuses_unknown_backend_and_nccl_without_gpus(no_torchrun):
    _torchrun_env(no_torchrun)
    with pytest.raises(ValueError, match="backend must be one of"):
        distributed.setup(backend="mpi")
    if torch.cuda.is_available():
        no_torchrun.setenv("LOCAL_RANK", str(torch.cuda.device_count()))
    with pytest.raises(ValueError, match="nccl.*--nproc_per_node"):
        distributed.setup(backend="nccl")
    assert not distributed.is_distributed()  # nothing was joined


def test_command_line_names_a_half_set_environment(no_torchrun, capsys):
    from ctr_src import cli
    no_torchrun.setenv("WORLD_SIZE", "2")
    code = cli.main(["train", "--data", "movielens", "--model", "fm"])
    assert code == 2
    err = capsys.readouterr().err
    assert "sets WORLD_SIZE but not RANK" in err and "torchrun" in err
