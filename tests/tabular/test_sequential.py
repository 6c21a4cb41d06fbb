"""The sequential TabularARGN: context, history and sequence lengths."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthgraph.tabular import TabularARGN


def make_tables(n_entities: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Short sequences for segment "a", long ones for "b"; `visit` counts up per entity."""
    rng = np.random.default_rng(seed)
    context = pd.DataFrame(
        {"customer": np.arange(n_entities), "segment": rng.choice(["a", "b"], n_entities)}
    )
    rows = []
    for customer, segment in zip(context["customer"], context["segment"], strict=True):
        length = rng.integers(2, 5) if segment == "a" else rng.integers(6, 9)
        for visit in range(length):
            rows.append(
                {
                    "customer": customer,
                    "visit": visit,
                    "channel": rng.choice(
                        ["web", "shop"], p=[0.9, 0.1] if segment == "a" else [0.1, 0.9]
                    ),
                }
            )
    return context, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_tables()


@pytest.fixture(scope="module")
def model(tables: tuple[pd.DataFrame, pd.DataFrame]) -> TabularARGN:
    context, events = tables
    return TabularARGN(max_epochs=40, seed=0).fit(events, context=context, context_key="customer")


def test_sampled_sequence_lengths_are_plausible(model: TabularARGN) -> None:
    context, events = model.sample_with_context(300, seed=1)
    assert list(events.columns) == ["customer", "visit", "channel"]
    lengths = events.groupby("customer").size().reindex(context["customer"], fill_value=0)
    assert lengths.between(2, 8).mean() > 0.95
    by_segment = lengths.groupby(context.set_index("customer")["segment"]).mean()
    assert by_segment["a"] < 4.5 < 6 < by_segment["b"]


def test_sample_returns_the_events_of_sample_with_context(model: TabularARGN) -> None:
    _, events = model.sample_with_context(40, seed=5)
    pd.testing.assert_frame_equal(model.sample(40, seed=5), events)


def test_impute_refuses_a_sequential_model(model: TabularARGN) -> None:
    with pytest.raises(ValueError, match="flat model"):
        model.impute(pd.DataFrame({"visit": [None]}))


def test_history_drives_the_next_row(model: TabularARGN) -> None:
    events = model.sample(200, seed=2)
    # Rows of an entity come out in order and `visit` counts up as in training.
    steps = events.groupby("customer").cumcount()
    assert (events["visit"] == steps).mean() > 0.9


def test_generation_per_given_context_row(model: TabularARGN) -> None:
    given = pd.DataFrame(
        {"customer": [1000 + i for i in range(60)], "segment": ["a"] * 30 + ["b"] * 30}
    )
    events = model.sample(context=given, seed=3)
    assert set(events["customer"]) <= set(given["customer"])
    per_customer = events.groupby("customer")["channel"].agg(lambda c: (c == "web").mean())
    segment = given.set_index("customer")["segment"].reindex(per_customer.index)
    assert per_customer[segment == "a"].mean() > 0.7
    assert per_customer[segment == "b"].mean() < 0.3


def test_sequential_model_without_context_table(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, events = tables
    model = TabularARGN(max_epochs=3, seed=0).fit(events, context_key="customer")
    sampled = model.sample(20, seed=0)
    assert list(sampled.columns) == list(events.columns)
    assert sampled.groupby("customer").size().max() <= events.groupby("customer").size().max()


def test_sequential_save_load_reproduces_samples(model: TabularARGN, tmp_path: Path) -> None:
    model.save(tmp_path)
    restored = TabularARGN.load(tmp_path)
    pd.testing.assert_frame_equal(restored.sample(50, seed=4), model.sample(50, seed=4))
