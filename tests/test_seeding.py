import numpy as np
import pytest

from roadsense.seeding import episode_seeds, seeds_from_rng, worker_seed


def test_episode_seeds_are_reproducible_and_distinct_per_identity() -> None:
    a = episode_seeds(7, worker_index=1, vector_index=0, episode=3)
    assert a == episode_seeds(7, worker_index=1, vector_index=0, episode=3)
    others = {
        episode_seeds(7, w, v, e, purpose=p)
        for w in range(4) for v in range(3) for e in range(5) for p in ("train", "eval")
    }
    assert len(others) == 4 * 3 * 5 * 2
    # the components of one episode differ from each other too
    assert len(set(a.as_dict().values())) == 5


def test_worker_seeds_never_collide_between_train_and_eval() -> None:
    train = {worker_seed(0, w, v, "train") for w in range(32) for v in range(8)}
    evals = {worker_seed(0, w, v, "eval") for w in range(32) for v in range(8)}
    assert len(train) == 256 and len(evals) == 256 and not train & evals


def test_seeds_fit_sumo_and_follow_the_generator() -> None:
    s = seeds_from_rng(np.random.default_rng(1))
    assert s == seeds_from_rng(np.random.default_rng(1))
    assert all(0 <= v < 2**31 for v in s.as_dict().values())


def test_negative_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="seed"):
        episode_seeds(-1)
