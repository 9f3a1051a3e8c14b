"""The learner benchmark's break-even minibatch (the size above which a CUDA learner pays)."""

import math

from benchmarks.learner import MINIBATCHES, break_even_row


def _rows(ratios):
    return [{"minibatch": m, "ratio": q} for m, q in zip(MINIBATCHES, ratios, strict=True)]


def test_break_even_is_the_smallest_size_from_which_cuda_keeps_up():
    # CUDA loses at 256, wins at 500, loses again at 1,000: only from 2,000 on does it pay.
    row = break_even_row(_rows([0.93, 1.1, 0.97, 1.6, 4.0]), "GPU")
    assert row["value"] == 2000.0
    assert row["unit"] == "samples"
    assert str(list(MINIBATCHES)) in row["metric"]


def test_break_even_at_the_smallest_size_when_cuda_always_wins():
    assert break_even_row(_rows([1.0, 1.2, 2.0, 3.0, 4.0]), "GPU")["value"] == 256.0


def test_no_break_even_without_cuda_or_when_the_cpu_always_wins():
    nan = float("nan")
    assert math.isnan(break_even_row(_rows([nan] * 5), "no CUDA here")["value"])
    assert math.isnan(break_even_row(_rows([0.5, 0.6, 0.7, 0.8, 0.9]), "GPU")["value"])
