"""Step budgets: the number of optimizer steps is bounded however many cells there are (issue 24)."""

from __future__ import annotations

import math

import pytest

import scgpcl
from scgpcl.data import SubgraphLoader
from scgpcl.train import Schedule


def _steps_per_epoch(n_cells: int, batch_size: int = 1024) -> int:
    return max(1, min(math.ceil(n_cells / batch_size), n_cells // 2))


@pytest.mark.parametrize("n_cells", [300, 4_000, 20_480, 100_000, 1_000_000, 10_000_000])
def test_budget_in_steps_is_bounded_and_small_data_keep_epochs(n_cells):
    cfg = scgpcl.recommended().override(min_round_steps=1).train  # rounds of at most one epoch
    s = Schedule.build(_steps_per_epoch(n_cells), cfg)
    assert s.steps_per_round == min(cfg.round_steps, _steps_per_epoch(n_cells))
    # bounded: never more than the rounds times round_steps, whatever n is
    assert s.max_pretrain_steps <= cfg.pretrain_rounds * cfg.round_steps
    assert s.max_finetune_steps <= cfg.finetune_rounds * cfg.round_steps
    if _steps_per_epoch(n_cells) <= cfg.round_steps:  # small data: a round is an epoch, as before
        assert s.steps_per_round == s.steps_per_epoch


@pytest.mark.parametrize("n_cells", [300, 2_500, 8_000, 100_000])
def test_min_round_steps_lengthens_rounds_on_small_data_only(n_cells):
    cfg = scgpcl.recommended().train  # the default: at least 5 steps per round
    s = Schedule.build(_steps_per_epoch(n_cells), cfg)
    assert cfg.min_round_steps == 5
    assert s.steps_per_round == max(5, min(cfg.round_steps, _steps_per_epoch(n_cells)))
    assert s.max_pretrain_steps <= cfg.pretrain_rounds * cfg.round_steps  # still bounded
    if _steps_per_epoch(n_cells) < 5:
        assert "epochs" in s.describe()


def test_faithful_rounds_are_epochs_at_any_size():
    cfg = scgpcl.faithful().train
    for n in (1_000, 1_000_000):
        s = Schedule.build(_steps_per_epoch(n), cfg)
        assert s.steps_per_round == s.steps_per_epoch  # the reference: cost grows with the cells


def test_loader_epochs_and_plans_cover_every_cell_once(toy):
    from scgpcl.data import prepare

    data = prepare(toy.X, toy.var_names.to_numpy())
    loader = SubgraphLoader(data, batch_size=50, seed=0)
    assert loader.steps_per_epoch == 4  # 180 cells in near-equal batches of at most 50
    plan = loader.plan(4)
    cells = sorted(int(c) for b in plan for c in b)
    assert cells == list(range(180)) and [len(b) for b in plan] == [45, 45, 45, 45]
    # a plan may end inside an epoch; the next one continues it with a new order after the epoch
    first, second = loader.plan(3), loader.plan(3)
    assert len(first) == len(second) == 3
    assert sorted(int(c) for b in first + second[:1] for c in b) == list(range(180))


@pytest.mark.parametrize(("n_cells", "expected"), [
    (100, 256),  # small data: the floor (then one minibatch of all 100 cells)
    (1_000, 256),  # 1000 / 4 = 250, raised to the floor
    (2_000, 500),  # a quarter of the cells
    (4_096, 1024),
    (100_000, 1024),  # large data: batch_size as before
])
def test_min_minibatches_shrinks_the_minibatch_on_small_data_only(n_cells, expected):
    s = scgpcl.recommended().override(min_minibatches=4, min_batch_size=256).sampler
    assert s.batch_for(n_cells) == expected
    assert scgpcl.recommended().override(min_minibatches=0).sampler.batch_for(n_cells) == 1024  # off
    # a batch_size already under the floor is kept; the option never makes minibatches larger
    assert scgpcl.recommended().override(batch_size=128, min_minibatches=4).sampler.batch_for(n_cells) == 128


def test_the_model_trains_with_the_smaller_minibatch(toy):
    # 180 cells, at least 4 minibatches of at least 30 cells: 4 near-equal minibatches of 45
    model = scgpcl.SCGPCL(toy, n_clusters=3, min_minibatches=4, min_batch_size=30)
    assert model.loader.steps_per_epoch == 4
    assert scgpcl.SCGPCL(toy, n_clusters=3, min_minibatches=0).loader.steps_per_epoch == 1  # off: one of 180


def test_a_stage_that_stops_early_ends_its_bar_complete_saying_why(monkeypatch):
    """A converged stage left its bar part-way (25/100), which reads as a failure: a notebook's tqdm paints a
    closed bar red when its count is short of its total. An interrupted stage's bar stays part-way."""
    import scgpcl.train._schedule as schedule
    from scgpcl.train._schedule import Progress

    monkeypatch.setattr(schedule, "live_bars", lambda: True)  # a terminal (pytest's stderr is not one)

    bar = Progress(100, "pre-training", enabled=True)
    bar.step(30)
    bar.round_done({"round": 6, "loss": 1.5})
    bar.close("converged")
    assert bar.bar.n == bar.bar.total == 30 and bar.bar.postfix.endswith(", converged")
    bar = Progress(100, "fine-tuning", enabled=True)
    bar.step(5)
    bar.close("patience")
    assert bar.bar.total == 5 and bar.bar.postfix == "stopped: no ARI gain"
    bar = Progress(100, "pre-training", enabled=True)  # tqdm.notebook's widget keeps a maximum of its own
    from types import SimpleNamespace

    widget = SimpleNamespace(max=100)
    bar.bar.container = SimpleNamespace(children=[None, widget, None])
    bar.step(40)
    bar.close("converged")
    assert widget.max == 40
    bar = Progress(100, "pre-training", enabled=True)
    bar.step(30)
    Progress.close_open()  # an exception ended the stage
    assert bar.bar.n == 30 and bar.bar.total == 100


def test_in_a_log_file_progress_is_a_line_per_round_with_the_time(capsys):
    """In a batch job's log file the bars were one line of carriage-return redraws growing for the whole stage
    (2.7 kB for 23 redraws of a short pre-training), without the time of day."""
    import re

    from scgpcl.train._schedule import Progress, live_bars

    assert not live_bars()  # pytest's captured stderr is no terminal
    bar = Progress(100, "pre-training", enabled=True)
    bar.step(20)
    bar.round_done({"round": 1, "steps": 20, "loss": 1.5})
    bar.step(20)
    bar.round_done({"round": 2, "steps": 40, "loss": 1.25})
    bar.close("converged")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"\d\d:\d\d:\d\d pre-training: round 2, step 40 of at most 100, loss 1\.25; \d+ s, about "
                        r"\d+ s left", lines[1]), lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d pre-training: 40 steps in \d+ s \(converged\)", lines[2]), lines
    quiet = Progress(100, "fine-tuning", enabled=False)  # progress=False, --quiet: nothing at all
    quiet.step(5)
    quiet.round_done({"round": 1, "loss": 1.0})
    quiet.close("max_rounds")
    assert capsys.readouterr().err == ""
