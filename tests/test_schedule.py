"""EDM / consistency schedule math (m2lcodec.schedule)."""

import math

import pytest
import torch

from m2lcodec import schedule


def test_sigma_endpoints_and_monotonic():
    i = torch.linspace(0, 1, 101)
    s = schedule.sigma_from_index(i)
    assert s[0].item() == pytest.approx(schedule.SIGMA_MIN, rel=1e-5)
    assert s[-1].item() == pytest.approx(schedule.SIGMA_MAX, rel=1e-5)
    assert bool((s[1:] > s[:-1]).all())


def test_boundary_condition_scalings():
    s = torch.tensor(schedule.SIGMA_MIN)
    assert schedule.c_skip(s).item() == pytest.approx(1.0)
    assert schedule.c_out(s).item() == pytest.approx(0.0, abs=1e-9)
    big = torch.tensor(80.0)
    assert schedule.c_skip(big).item() < 1e-4
    assert schedule.c_out(big).item() == pytest.approx(schedule.SIGMA_DATA, rel=1e-3)
    assert schedule.c_in(torch.tensor(0.0)).item() == pytest.approx(1 / schedule.SIGMA_DATA)


def test_index_sampler_follows_lognormal():
    g = torch.Generator().manual_seed(0)
    i = schedule.IndexSampler().sample(50_000, generator=g)
    assert 0 <= i.min() and i.max() <= 1
    log_sigma = torch.log(schedule.sigma_from_index(i))
    # the log-normal is truncated to [log 0.002, log 80], so the mean moves only a little
    assert log_sigma.median().item() == pytest.approx(-1.1, abs=0.15)
    assert 1.5 < log_sigma.std().item() < 2.1


def test_paper_step_schedule():
    sch = schedule.StepSchedule(kind="paper")
    assert sch(0, 1000) == pytest.approx(0.1)
    assert sch(500, 1000) == pytest.approx(0.01)
    assert sch(1000, 1000) == pytest.approx(0.001)


def test_ect_schedule_starts_as_denoising_and_joins_paper():
    sch = schedule.StepSchedule(kind="ect", start=1.0, anneal_fraction=0.5, hold_fraction=0.0)
    total = 1000
    assert sch(0, total) == pytest.approx(1.0)
    # teacher index clamped at 0 for every student index: the teacher is the clean signal
    i = torch.rand(100)
    assert bool((schedule.teacher_index(i, sch(0, total)) == 0).all())
    values = [sch(k, total) for k in range(0, 500, 50)]
    assert all(a > b for a, b in zip(values, values[1:]))  # shrinks monotonically
    for k in (500, 700, 1000):
        assert sch(k, total) == pytest.approx(sch.paper(k, total))


def test_ect_schedule_holds_denoising_then_anneals():
    sch = schedule.StepSchedule(kind="ect", start=1.0, anneal_fraction=0.6, hold_fraction=0.3)
    total = 1000
    assert all(sch(k, total) == 1.0 for k in (0, 150, 299))  # plain denoising for the first 30%
    values = [sch(k, total) for k in range(300, 600, 30)]
    assert values[0] == pytest.approx(1.0) and all(a > b for a, b in zip(values, values[1:]))
    for k in (600, 800, 1000):
        assert sch(k, total) == pytest.approx(sch.paper(k, total))


def test_unknown_schedule_kind():
    with pytest.raises(ValueError):
        schedule.StepSchedule(kind="nope")(0, 10)


def test_noise_embedding_input():
    assert schedule.noise_embedding_input(torch.tensor(math.e**4)).item() == pytest.approx(1.0)


def test_paper_weighting_is_inverse_step():
    s, t = torch.tensor([80.0, 1.0, 0.01]), torch.tensor([79.0, 0.5, 0.005])
    torch.testing.assert_close(schedule.consistency_weight(s, t, "paper"), 1 / (s - t))


def test_clamped_weighting_equals_paper_for_small_steps_and_edm_in_denoising_limit():
    s = torch.tensor([80.0, 10.0, 1.0, 0.1])
    small_step = 0.5 * schedule.c_out(s)  # gap below c_out: identical to the paper's weight
    torch.testing.assert_close(schedule.consistency_weight(s, s - small_step, "clamped"), 1 / small_step, rtol=1e-4, atol=0)
    teacher_clean = torch.full_like(s, schedule.SIGMA_MIN)  # ECT start: the teacher is the clean signal
    w = schedule.consistency_weight(s, teacher_clean, "clamped")
    # unit gradient on the network output at every noise level: c_out * w == 1 ...
    torch.testing.assert_close(schedule.c_out(s) * w, torch.ones_like(s))
    # ... where the paper's weight gives sigma_max ~160x less than sigma 0.1
    paper = schedule.c_out(s) * schedule.consistency_weight(s, teacher_clean, "paper")
    assert paper[0] < paper[-1] / 100


def test_unknown_weighting():
    with pytest.raises(ValueError, match="weighting"):
        schedule.consistency_weight(torch.ones(1), torch.zeros(1), "bogus")
