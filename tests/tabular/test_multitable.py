"""Multi-table synthesis: schema checks, resolving foreign keys, child counts, save and load."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synthgraph.graphs.cli import app
from synthgraph.graphs.tabular.graph import graph
from synthgraph.graphs.tabular.job import read_schema, sample_schema_job
from synthgraph.graphs.tabular.tool import fit_tool, generate_tool
from synthgraph.tabular.multitable import (
    MultiTableModel,
    Schema,
    check_integrity,
    child_counts,
    fit_schema,
)
from synthgraph.tools.io import InputError
from synthgraph.tools.workspace import workspace_root

# Listed children first: the schema orders its tables parents first by itself.
SPEC: dict[str, Any] = {
    "tables": {
        "items": {"primary_key": "item_id", "foreign_key": {"column": "order", "parent": "orders"}},
        "orders": {
            "primary_key": "order_id",
            "foreign_key": {"column": "customer", "parent": "customers"},
        },
        "customers": {"primary_key": "id"},
    }
}


def make_tables(n_customers: int = 200, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Segment "a" customers have 0-2 orders, "b" ones 4-6; web orders hold 1 item, shop 3-4."""
    rng = np.random.default_rng(seed)
    customers = pd.DataFrame(
        {
            "id": np.arange(100, 100 + n_customers),
            "segment": rng.choice(["a", "b"], n_customers),
        }
    )
    orders: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for customer, segment in zip(customers["id"], customers["segment"], strict=True):
        for _ in range(rng.integers(0, 3) if segment == "a" else rng.integers(4, 7)):
            order_id = f"o{len(orders)}"
            channel = str(rng.choice(["web", "shop"]))
            orders.append({"order_id": order_id, "customer": customer, "channel": channel})
            for _ in range(1 if channel == "web" else rng.integers(3, 5)):
                price = round(float(rng.gamma(2.0, 10.0)), 2)
                items.append({"item_id": len(items), "order": order_id, "price": price})
    return {"customers": customers, "orders": pd.DataFrame(orders), "items": pd.DataFrame(items)}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return make_tables()


@pytest.fixture(scope="module")
def model(tables: dict[str, pd.DataFrame]) -> MultiTableModel:
    return fit_schema(Schema.from_dict(SPEC), tables, max_epochs=15, seed=0)


@pytest.fixture(scope="module")
def synthetic(model: MultiTableModel) -> dict[str, pd.DataFrame]:
    return model.sample(seed=0)


def test_the_schema_orders_parents_before_children() -> None:
    assert list(Schema.from_dict(SPEC).tables) == ["customers", "orders", "items"]


def test_every_foreign_key_resolves_and_keys_are_new(
    model: MultiTableModel, synthetic: dict[str, pd.DataFrame], tables: dict[str, pd.DataFrame]
) -> None:
    report = check_integrity(model.schema, synthetic, model.source_counts)
    assert {name: (r.orphans, r.duplicate_keys) for name, r in report.items()} == {
        "customers": (0, 0),
        "orders": (0, 0),
        "items": (0, 0),
    }
    for name, frame in synthetic.items():
        assert list(frame.columns) == list(tables[name].columns)
    assert len(synthetic["customers"]) == len(tables["customers"])
    assert synthetic["customers"]["id"].tolist() == list(range(1, len(tables["customers"]) + 1))
    # Text keys stay text: "1", "2", ... in place of "o0", "o1", ...
    assert synthetic["orders"]["order_id"].iloc[0] == "1"
    assert synthetic["items"]["order"].isin(synthetic["orders"]["order_id"]).all()


def test_child_counts_follow_the_source(
    model: MultiTableModel, synthetic: dict[str, pd.DataFrame], tables: dict[str, pd.DataFrame]
) -> None:
    assert model.source_counts == child_counts(model.schema, tables)
    counts = child_counts(model.schema, synthetic)
    for name in ("orders", "items"):
        source = model.source_counts[name]
        assert counts[name]["mean"] == pytest.approx(source["mean"], rel=0.25)
        assert counts[name]["max"] <= source["max"]


def test_children_are_conditioned_on_their_parent_row(synthetic: dict[str, pd.DataFrame]) -> None:
    customers, orders, items = synthetic["customers"], synthetic["orders"], synthetic["items"]
    orders_per_customer = (
        orders["customer"].value_counts().reindex(customers["id"], fill_value=0).to_numpy()
    )
    by_segment = pd.Series(orders_per_customer).groupby(customers["segment"].to_numpy()).mean()
    assert by_segment["a"] < 2 < 3.5 < by_segment["b"]
    channel = orders.set_index("order_id")["channel"]
    items_per_order = items.groupby("order").size()
    by_channel = items_per_order.groupby(channel[items_per_order.index].to_numpy()).mean()
    assert by_channel["web"] < 1.5 < 2.5 < by_channel["shop"]


def test_parent_rows_sets_the_root_table_size(model: MultiTableModel) -> None:
    sampled = model.sample(parent_rows=30, seed=1)
    assert len(sampled["customers"]) == 30
    report = check_integrity(model.schema, sampled)
    assert sum(r.orphans for r in report.values()) == 0


def test_save_and_load_round_trip(
    model: MultiTableModel, synthetic: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    model.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "customers",
        "items",
        "orders",
        "schema.json",
    ]
    loaded = MultiTableModel.load(tmp_path / "model")
    assert list(loaded.schema.tables) == list(model.schema.tables)
    assert loaded.source_counts == model.source_counts
    again = loaded.sample(seed=0)
    for name, frame in synthetic.items():
        pd.testing.assert_frame_equal(again[name], frame)


def test_load_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a readable multi-table model"):
        sample_schema_job(tmp_path, tmp_path / "out")


def write_files(folder: Path, tables: dict[str, pd.DataFrame], schema: dict[str, Any]) -> Path:
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    for name, item in schema["tables"].items():
        item["path"] = f"{name}.csv"
    path = folder / "schema.json"
    path.write_text(json.dumps(schema))
    return path


def test_orphans_are_dropped_with_a_warning_and_the_schema_file_is_read(tmp_path: Path) -> None:
    tables = make_tables(n_customers=40, seed=3)
    # An order of an unknown customer: it and its items go.
    orphan_order = tables["orders"].iloc[[0]].assign(order_id="lost", customer=-1)
    orphan_items = tables["items"].iloc[[0, 1]].assign(item_id=[-1, -2], order="lost")
    tables["orders"] = pd.concat([tables["orders"], orphan_order])
    tables["items"] = pd.concat([tables["items"], orphan_items])
    schema, read = read_schema(write_files(tmp_path, tables, json.loads(json.dumps(SPEC))))
    with pytest.warns(UserWarning) as caught:
        model = fit_schema(schema, read, max_epochs=1, seed=0)
    messages = [str(w.message) for w in caught]
    assert any("table 'orders': dropped 1 of" in m for m in messages)
    assert any("table 'items': dropped 2 of" in m for m in messages)
    assert model.orphans == {"customers": 0, "orders": 1, "items": 2}
    assert model.rows["items"] == len(tables["items"]) - 2


def test_yaml_schema_is_read(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(
        "tables:\n"
        "  seasons:\n"
        "    path: data/seasons.csv\n"
        "    foreign_key: {column: player_id, parent: players}\n"
        "  players:\n"
        "    path: data/players.csv\n"
        "    primary_key: id\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "players.csv").write_text("id,name\n1,a\n")
    (tmp_path / "data" / "seasons.csv").write_text("player_id,year\n1,2020\n")
    schema, read = read_schema(path)
    assert list(read) == ["players", "seasons"]
    assert list(schema.tables) == ["players", "seasons"]
    assert schema.tables["seasons"].path == tmp_path / "data" / "seasons.csv"
    assert schema.tables["seasons"].primary_key is None


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (
            {"a": {"primary_key": "id", "foreign_key": {"column": "b_id", "parent": "b"}}},
            r"table 'a': its foreign key's parent 'b' is not in the schema",
        ),
        (
            {
                "a": {"primary_key": "id", "foreign_key": {"column": "b_id", "parent": "b"}},
                "b": {"primary_key": "id", "foreign_key": {"column": "a_id", "parent": "a"}},
            },
            r"cycle: a -> b -> a",
        ),
        (
            {"a": {"primary_key": "id", "foreign_key": {"column": "a_id", "parent": "a"}}},
            r"cycle: a -> a",
        ),
        (
            {"a": {}, "b": {"foreign_key": {"column": "a_id", "parent": "a"}}},
            r"table 'b': its parent 'a' has no primary_key",
        ),
        ({"a": {"primary": "id"}}, r"table 'a': unknown field primary"),
        ({"a": {"foreign_key": "b"}}, r"table 'a': foreign_key must be"),
        ({"../a": {}}, r"table '../a': use letters"),
    ],
)
def test_schema_errors_name_the_file_and_table(tables: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"^s\.json: .*" + message):
        Schema.from_dict({"tables": tables}, source="s.json")


def test_a_schema_file_that_is_not_json_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text("{tables:")
    with pytest.raises(InputError, match=r"schema\.json: not valid JSON"):
        read_schema(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("items"), r"table 'items': no such table given"),
        (
            lambda t: t.update(orders=t["orders"].drop(columns="customer")),
            r"table 'orders': no column 'customer'",
        ),
        (
            lambda t: t.update(customers=t["customers"].assign(id=1)),
            r"table 'customers': 39 rows have a missing or repeated primary key 'id'",
        ),
        (
            lambda t: t.update(items=t["items"].drop(columns="price")),
            r"table 'items': no columns besides its keys",
        ),
        (
            lambda t: t.update(orders=t["orders"].iloc[:0]),
            r"table 'orders': no rows",
        ),
    ],
)
def test_table_errors_name_the_schema_and_table(change: Any, message: str) -> None:
    tables = make_tables(n_customers=40)
    change(tables)
    schema = Schema.from_dict(json.loads(json.dumps(SPEC)), source="s.json")
    with pytest.raises(ValueError, match=r"^s\.json: " + message):
        fit_schema(schema, tables, max_epochs=1)


# --- the command, the tool and the graph (all call the tabular jobs) --------------------------
def test_cli_fits_a_schema_and_samples_every_table(tmp_path: Path) -> None:
    schema = write_files(
        tmp_path, make_tables(n_customers=60, seed=4), json.loads(json.dumps(SPEC))
    )
    runner = CliRunner()
    fitted = runner.invoke(
        app, ["tabular", "fit", "--schema", str(schema), "-m", str(tmp_path / "m"), "--epochs", "2"]
    )
    assert fitted.exit_code == 0, fitted.output
    assert "orders" in fitted.output and "customers" in fitted.output
    sampled = runner.invoke(
        app,
        [
            "tabular",
            "sample",
            "-m",
            str(tmp_path / "m"),
            "-o",
            str(tmp_path / "out"),
            "--rows",
            "30",
        ],
    )
    assert sampled.exit_code == 0, sampled.output
    out = {name: pd.read_csv(tmp_path / "out" / f"{name}.csv") for name in SPEC["tables"]}
    assert len(out["customers"]) == 30
    assert out["orders"]["customer"].isin(out["customers"]["id"]).all()
    assert out["items"]["order"].isin(out["orders"]["order_id"]).all()
    both = runner.invoke(app, ["tabular", "fit", str(schema), "--schema", str(schema), "-m", "x"])
    assert both.exit_code == 2 and "exactly one of DATA and --schema" in both.output


def test_the_tool_and_the_graph_take_a_schema_inside_the_workspace(tmp_path: Path) -> None:
    root = workspace_root()
    write_files(root, make_tables(n_customers=40, seed=5), json.loads(json.dumps(SPEC)))
    fitted = fit_tool().invoke({"schema_path": "schema.json", "model_dir": "mt", "max_epochs": 1})
    assert fitted["tables"]["items"]["parent"] == "orders"
    sampled = generate_tool().invoke({"model_dir": "mt", "output_path": "mt-out", "rows": 10})
    assert sampled["output_dir"] == "mt-out" and sampled["integrity"]["items"]["orphans"] == 0
    result = graph.invoke(
        {"schema_path": "schema.json", "model_dir": "mt2", "output_path": "mt2-out", "rows": 10,
         "max_epochs": 1}
    )  # fmt: skip
    assert result["metrics"]["integrity"]["orders"]["orphans"] == 0
    assert (root / "mt2-out" / "customers.csv").is_file()
    # A schema whose table is a link out of the workspace is refused, not read.
    outside = tmp_path / "secret.csv"
    outside.write_text("id,x\n1,2\n")
    (root / "linked").mkdir()
    (root / "linked" / "customers.csv").symlink_to(outside)
    spec = {"tables": {"customers": {"path": "customers.csv", "primary_key": "id"}}}
    (root / "linked" / "schema.json").write_text(json.dumps(spec))
    refused = fit_tool().invoke({"schema_path": "linked/schema.json", "model_dir": "mt3"})
    assert "outside the workspace" in refused
