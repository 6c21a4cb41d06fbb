"""The quality report: accuracy from binned marginals, DCR share against a holdout."""

import numpy as np
import pandas as pd
import pytest

from synthgraph.tabular import quality_report


def make_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], n)
    return pd.DataFrame(
        {
            "group": group,
            "value": rng.normal(0, 1, n) + (group == "a") * 3,
            "day": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        }
    )


def test_a_copy_of_the_training_data_is_accurate_but_private_it_is_not() -> None:
    training, holdout = make_frame(2000, 0), make_frame(2000, 1)
    report = quality_report(training, training, holdout)
    assert report["accuracy"]["overall"] == pytest.approx(1.0)
    assert report["dcr"]["share"] > 0.99  # a few holdout rows tie with training rows
    assert report["dcr"]["identical_to_training"] == pytest.approx(1.0)


def test_fresh_data_from_the_same_distribution_scores_well_on_both() -> None:
    training, holdout, fresh = make_frame(2000, 0), make_frame(2000, 1), make_frame(2000, 2)
    report = quality_report(fresh, training, holdout)
    assert report["accuracy"]["univariate"] > 0.95
    assert report["accuracy"]["bivariate"] > 0.9
    assert 0.4 < report["dcr"]["share"] < 0.6


def test_a_broken_dependency_lowers_bivariate_accuracy() -> None:
    training = make_frame(2000, 0)
    shuffled = training.assign(value=training["value"].sample(frac=1, random_state=0).to_numpy())
    report = quality_report(shuffled, training)
    assert report["accuracy"]["univariate"] == pytest.approx(1.0)
    assert report["accuracy"]["bivariate"] < 0.9
    assert "dcr" not in report
