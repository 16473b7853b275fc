"""rayplex.integrations.train: a real DataParallelTrainer on 2 CPU workers logged through
RayplexTrainCallback (every rank kept, cross-rank summary, worker failures), plus rayplex
loggers used inside the training loop at uneven rates."""

from __future__ import annotations

import os
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest

import rayplex
from rayplex.integrations.train import round_step

HUB = "train-test"
EPOCHS = 4


def _f32(x):
    return float(np.float32(x))


def _loss(rank, epoch):
    return 1.0 / (epoch + 1) + rank


def _reports(rank, epoch):
    """Rank 0 steps by ``epoch``, rank 1 by its own ``step``; rank 1 leaves ``loss`` out of
    odd epochs."""
    metrics = {"epoch": epoch, "acc": rank + epoch / 10}
    if rank == 1:
        metrics["step"] = 100 + epoch
    if not (rank == 1 and epoch % 2):
        metrics["loss"] = _loss(rank, epoch)
    return metrics


def _inner(rank, epoch, j):
    return rank * 100 + epoch * 10 + j


def _train_fn(config):
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    log = rayplex.get_logger(f"train/{rank}", hub=HUB)
    for epoch in range(EPOCHS):
        for j in range(2 + 3 * rank):  # rank 1 logs more often than rank 0, no barrier
            log.add_scalar("inner", _inner(rank, epoch, j), step=epoch * 10 + j)
        ray.train.report(_reports(rank, epoch))
    log.flush()
    raise ValueError(f"rank {rank} broke after training")


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from rayplex.integrations.train import RayplexTrainCallback

    root = tmp_path_factory.mktemp("train")
    logdir = str(root / "exp")
    callback = RayplexTrainCallback(logdir, hub=HUB)
    trainer = DataParallelTrainer(
        _train_fn, scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(storage_path=str(root / "storage"), callbacks=[callback],
                             failure_config=FailureConfig(max_failures=0)))
    with pytest.raises(Exception, match="broke after training"):
        trainer.fit()
    # read before any flush from here: the callback flushed after each round by itself
    ranks = _series(logdir, run="train/[01]")
    rayplex.flush(HUB)  # writes the summaries still in the hub's quiet time
    yield SimpleNamespace(logdir=logdir, callback=callback, ranks=ranks)
    rayplex.shutdown(HUB)


def _series(logdir, run=None, tag=None):
    out = defaultdict(list)
    for row in rayplex.read_scalars(logdir, group="train", run=run, tag=tag):
        out[(row.run, row.tag)].append((row.step, row.value))
    return out


def test_every_rank_keeps_its_reported_metrics_at_its_own_step(run):
    got = run.ranks
    assert got[("train/0", "train/loss/0-63")] == [
        (e, _f32(_loss(0, e))) for e in range(EPOCHS)]
    assert got[("train/1", "train/loss/0-63")] == [
        (100 + e, _f32(_loss(1, e))) for e in range(EPOCHS) if e % 2 == 0]
    assert got[("train/1", "train/acc/0-63")] == [(100 + e, _f32(1 + e / 10))
                                                  for e in range(EPOCHS)]


def test_loggers_inside_the_loop_land_in_the_ranks_runs_at_uneven_rates(run):
    got = run.ranks
    for rank in (0, 1):
        assert got[(f"train/{rank}", "train/inner/0-63")] == [
            (e * 10 + j, float(_inner(rank, e, j)))
            for e in range(EPOCHS) for j in range(2 + 3 * rank)]


def test_summary_run_has_cross_rank_statistics_at_rank_zeros_step(run):
    got = {tag: dict(points) for (_, tag), points in
           _series(run.logdir, run="train/summary").items()}
    for epoch in range(EPOCHS):
        losses = [_loss(r, epoch) for r in (0, 1) if not (r == 1 and epoch % 2)]
        assert got["loss/count"][epoch] == len(losses)
        assert got["loss/mean"][epoch] == pytest.approx(np.mean(losses), rel=1e-6)
        assert got["loss/min"][epoch] == _f32(min(losses))
        assert got["loss/max"][epoch] == _f32(max(losses))
        assert got["acc/std"][epoch] == pytest.approx(np.std([epoch / 10, 1 + epoch / 10]),
                                                      rel=1e-6)
    assert set(got["loss/mean"]) == set(range(EPOCHS))


def test_each_ranks_exception_goes_to_its_text_log(run):
    for rank in (0, 1):
        with open(os.path.join(run.logdir, "logs", "train", f"{rank}.log"),
                  encoding="utf-8") as f:
            text = f.read()
        assert f"rank {rank} raised" in text
        assert f"ValueError: rank {rank} broke after training" in text


def test_rounds_without_a_step_key_use_the_round_ordinal(experiment):
    from rayplex.integrations.train import RayplexTrainCallback

    callback = RayplexTrainCallback(hub=experiment.name, group="ranks", bin_size=2)
    for i in range(3):
        callback.after_report(None, [{"loss": float(i)}, {"loss": 10.0 + i}], None)
    rayplex.flush(experiment.name)
    rows = rayplex.read_scalars(experiment.logdir, group="ranks")
    got = defaultdict(list)
    for r in rows:
        got[(r.run, r.tag)].append((r.step, r.value))
    assert got[("ranks/0", "ranks/loss/0-1")] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert got[("ranks/1", "ranks/loss/0-1")] == [(0, 10.0), (1, 11.0), (2, 12.0)]
    assert got[("ranks/summary", "loss/mean")] == [(0, 5.0), (1, 6.0), (2, 7.0)]


def test_a_rank_step_comes_from_step_then_epoch_then_training_iteration():
    assert round_step({"step": 5, "epoch": 1, "training_iteration": 9}, 0) == 5
    assert round_step({"epoch": 1, "training_iteration": 9}, 0) == 1
    assert round_step({"training_iteration": 9}, 0) == 9
    assert round_step({"step": 1.5, "loss": 0.1}, 4) == 4


def test_rounds_replayed_after_a_restart_are_written_once_keeping_the_first(experiment):
    from rayplex.integrations.train import RayplexTrainCallback

    callback = RayplexTrainCallback(hub=experiment.name, group="again", bin_size=2)
    first = [[{"epoch": e, "loss": float(e)}, {"step": 10 + e, "loss": 10.0 + e}]
             for e in range(3)]
    replay = [[{"epoch": e, "loss": 100.0 + e}, {"step": 10 + e, "loss": 110.0 + e}]
              for e in range(1, 4)]  # restarted from epoch 1's checkpoint
    for round_ in first + replay:
        callback.after_report(None, round_, None)
    rayplex.flush(experiment.name)
    got = defaultdict(list)
    for r in rayplex.read_scalars(experiment.logdir, group="again"):
        got[(r.run, r.tag)].append((r.step, r.value))
    assert got[("again/0", "again/loss/0-1")] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 103.0)]
    assert got[("again/1", "again/loss/0-1")] == [(10, 10.0), (11, 11.0), (12, 12.0),
                                                  (13, 113.0)]
    assert got[("again/summary", "loss/mean")] == [(0, 5.0), (1, 6.0), (2, 7.0), (3, 108.0)]


def _flaky_train_fn(config):
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    attempt = 0 if not os.path.exists(config["marker"]) else 1
    for epoch in range(3):
        ray.train.report({"epoch": epoch, "loss": attempt * 100.0 + epoch + rank})
        if attempt == 0 and epoch == 1:
            if rank == 0:
                open(config["marker"], "w").close()
            raise RuntimeError("a worker failed")


@pytest.mark.slow
def test_a_run_restarted_by_train_writes_each_rank_step_once(ray_session, tmp_path):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from rayplex.integrations.train import RayplexTrainCallback

    logdir = str(tmp_path / "exp")
    callback = RayplexTrainCallback(logdir, hub="train-restart", group="flaky")
    trainer = DataParallelTrainer(
        _flaky_train_fn, train_loop_config={"marker": str(tmp_path / "failed-once")},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(storage_path=str(tmp_path / "storage"), callbacks=[callback],
                             failure_config=FailureConfig(max_failures=1)))
    trainer.fit()
    rayplex.flush("train-restart")
    got = defaultdict(list)
    for r in rayplex.read_scalars(logdir, group="flaky"):
        got[(r.run, r.tag)].append((r.step, r.value))
    for rank in (0, 1):  # epochs 0 and 1 from the first attempt, epoch 2 from the second
        assert got[(f"flaky/{rank}", "flaky/loss/0-63")] == [
            (0, 0.0 + rank), (1, 1.0 + rank), (2, 102.0 + rank)]
    assert [s for s, _ in got[("flaky/summary", "loss/count")]] == [0, 1, 2]
    rayplex.shutdown("train-restart")
