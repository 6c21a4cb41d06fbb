"""TabularARGN: fit, sample, impute, save and load.

Flat data is one table. Sequential data is an event table keyed by
`context_key` plus an optional context table with one row per entity; the
sequence length becomes a column of the context model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from synthgraph.tabular.constraints import Constraint, ConstraintError, Constraints
from synthgraph.tabular.dp import DPConfig, privacy_record, train_private
from synthgraph.tabular.encoding import EncodingOptions, TableEncoder
from synthgraph.tabular.encoding.categorical import RARE_MODES
from synthgraph.tabular.encoding.numeric import protected_bounds
from synthgraph.tabular.model import ARGNNet, NetConfig, summed_cross_entropy
from synthgraph.tabular.sampling import RowMask, banned_tokens, sample_codes
from synthgraph.tabular.sequential import SequenceConfig, SequenceNet, extra_dim
from synthgraph.tabular.training import (
    DEFAULT_EPOCHS,
    LossFunction,
    ProgressCallback,
    TrainConfig,
    seed_everything,
    train,
)

FORMAT = "synthgraph.tabular.argn/1"
LENGTH_COLUMN = "__sequence_length__"
TrainExecutor = Literal["local", "ray"]
"""Where the networks train: in this process, or data-parallel on Ray Train workers."""
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "model.json"


def auto_hidden(n_sub: int) -> int:
    """Wide tables get narrower regressors so the per-target weights stay affordable."""
    return 64 if n_sub <= 32 else 48 if n_sub <= 64 else 32


NATURAL_ORDER_SHARE = 0.5


def _random_rank(n_columns: int, generator: torch.Generator) -> torch.Tensor:
    """The rank of each column in this batch's order.

    Half the batches use the table's own column order, the order unconditional
    generation follows; the others a uniformly random order, which is what lets
    any subset of columns be fixed for conditional generation and imputation.
    """
    if float(torch.rand(1, generator=generator)) < NATURAL_ORDER_SHARE:
        return torch.arange(n_columns)
    permutation = torch.randperm(n_columns, generator=generator)
    rank = torch.empty_like(permutation)
    rank[permutation] = torch.arange(n_columns)
    return rank


def _string_columns(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    return frame


class _FlatPart:
    """An encoder plus the network that models its sub-columns."""

    def __init__(self, encoder: TableEncoder, net: ARGNNet) -> None:
        self.encoder = encoder
        self.net = net

    @classmethod
    def create(
        cls,
        frame: pd.DataFrame,
        options: EncodingOptions,
        dropout: float,
        dp: DPConfig | None = None,
    ) -> _FlatPart:
        encoder = TableEncoder.fit(frame, options, dp.analysis_noise() if dp else None)
        config = NetConfig(
            cardinalities=encoder.cardinalities,
            column_of_sub=encoder.column_of_sub,
            hidden=auto_hidden(len(encoder.cardinalities)),
            dropout=dropout,
        )
        return cls(encoder, ARGNNet(config))

    def fit(
        self,
        frame: pd.DataFrame,
        config: TrainConfig,
        progress: ProgressCallback | None,
        dp: DPConfig | None = None,
        ray_workers: int | None = None,
    ) -> dict[str, Any]:
        codes = torch.from_numpy(self.encoder.encode(frame))
        n_columns = len(self.encoder.columns)
        if dp is not None:
            return train_private(
                self.net,
                codes,
                summed_cross_entropy,
                lambda generator: _random_rank(n_columns, generator),
                config,
                dp,
                progress,
            )

        def loss_of(batch: np.ndarray, generator: torch.Generator) -> torch.Tensor:
            rows = codes[torch.from_numpy(batch)]
            return summed_cross_entropy(self.net(rows, _random_rank(n_columns, generator)), rows)

        return _train(self.net, len(frame), loss_of, config, progress, ray_workers)

    def draw(
        self,
        fixed_frame: pd.DataFrame,
        fixed: np.ndarray,
        temperature: float,
        top_p: float,
        generator: torch.Generator,
        ban_missing: bool = False,
        batch_size: int = 16384,
        row_mask: RowMask | None = None,
    ) -> np.ndarray:
        """Codes for every row of `fixed_frame`; `fixed` (rows, columns) marks kept cells."""
        suppress = [list(s["suppress"]) for s in self.encoder.sub_columns]
        if ban_missing:
            for tokens, sub in zip(suppress, self.encoder.sub_columns, strict=True):
                if sub["missing"] is not None and sub["missing"] not in tokens:
                    tokens.append(sub["missing"])
        banned = banned_tokens(self.net, suppress)
        codes = torch.from_numpy(self.encoder.encode(fixed_frame))
        fixed_sub = torch.from_numpy(fixed[:, self.encoder.column_of_sub].copy())
        column_order = list(range(len(self.encoder.columns)))
        out = []
        for start in range(0, len(codes), batch_size):
            part = slice(start, start + batch_size)
            out.append(
                sample_codes(
                    self.net,
                    codes[part],
                    fixed_sub[part],
                    banned,
                    column_order,
                    temperature=temperature,
                    top_p=top_p,
                    generator=generator,
                    row_mask=row_mask,
                )
            )
        return (
            torch.cat(out).numpy()
            if out
            else np.zeros((0, len(self.encoder.sub_columns)), dtype=np.int64)
        )


class TabularARGN:
    """Any-order autoregressive generative network for flat and sequential tables."""

    def __init__(
        self,
        *,
        max_epochs: int = DEFAULT_EPOCHS,
        max_minutes: float | None = None,
        batch_size: int | None = None,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-5,
        val_fraction: float = 0.1,
        patience: int = 4,
        dropout: float = 0.2,
        seed: int | None = 0,
        num_threads: int | None = None,
        rare_min_count: int = 5,
        rare: str = "sample",
        max_discrete: int = 50,
        max_digit_positions: int = 2,
        n_bins: int = 100,
    ) -> None:
        self.train_config = TrainConfig(
            max_epochs=max_epochs,
            max_minutes=max_minutes,
            batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            val_fraction=val_fraction,
            patience=patience,
            seed=seed,
            num_threads=num_threads,
        )
        if rare not in RARE_MODES:
            raise ValueError(f"rare must be one of {', '.join(RARE_MODES)}, not {rare!r}")
        self.options = EncodingOptions(
            rare=rare,
            rare_min_count=rare_min_count,
            max_discrete=max_discrete,
            max_digit_positions=max_digit_positions,
            n_bins=n_bins,
        )
        self.dropout = dropout
        self.context_key: str | None = None
        self.key_dtype: str | None = None
        self.flat: _FlatPart | None = None  # the flat table, or the context table when sequential
        self.events_encoder: TableEncoder | None = None
        self.sequence_net: SequenceNet | None = None
        self.summary: dict[str, Any] = {}
        self.constraints: Constraints | None = None
        self.source_violations: dict[str, int] = {}
        """Rows of the training table that break each constraint (allowed there, counted)."""
        self.privacy: dict[str, Any] | None = None
        """What a differentially private fit spent (ε, δ, noise; see `synthgraph.tabular.dp`)."""

    @property
    def is_sequential(self) -> bool:
        return self.sequence_net is not None

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        data: pd.DataFrame,
        context: pd.DataFrame | None = None,
        context_key: str | None = None,
        progress: ProgressCallback | None = None,
        constraints: list[Constraint] | None = None,
        dp: DPConfig | None = None,
        executor: TrainExecutor = "local",
        workers: int = 1,
    ) -> Self:
        """Train on `data`; with `context_key`, `data` is an event table keyed by that column.

        `constraints` (flat tables) hold in every sample; see `synthgraph.tabular.constraints`.
        `dp` makes a flat fit (ε, δ)-differentially private for every row, its value analysis
        included; then `max_epochs` is the plan the noise is sized for, trained in full with no
        validation rows. See `synthgraph.tabular.dp`.
        `executor="ray"` trains data-parallel on `workers` Ray Train workers (DDP on CPU; see
        `synthgraph.tabular.ray_train`), with the same global batch as one process.
        """
        if executor not in ("local", "ray"):
            raise ValueError(f"executor must be local or ray, not {executor!r}")
        if workers < 1 or (executor == "local" and workers != 1):
            raise ValueError("workers is the number of Ray Train workers: 1 or more, with ray")
        if dp is not None and executor == "ray":
            raise ValueError("a differentially private fit trains in one process: no ray")
        ray_workers = workers if executor == "ray" else None
        if dp is not None and context_key is not None:
            raise ValueError(
                "differential privacy covers flat tables only: the sequential model's LSTM "
                "has no per-entity gradients in Opacus"
            )
        if dp is not None and constraints:
            raise ValueError(
                "constraints learn from the data without noise: leave them out of a private fit"
            )
        if self.train_config.num_threads:
            torch.set_num_threads(self.train_config.num_threads)
        # Seed before the networks are built, so their initial weights repeat too.
        seed_everything(self.train_config.seed)
        data = _string_columns(data)
        self.constraints, self.source_violations, self.privacy = None, {}, None
        if context_key is None:
            if context is not None:
                raise ValueError("a context table needs context_key")
            if constraints:
                self.constraints = Constraints.fit(constraints, data, self.options.rare_min_count)
                self.source_violations = self.constraints.violations(data)
                data = data.drop(columns=self.constraints.derived)
            self.flat = _FlatPart.create(data, self.options, self.dropout, dp)
            if self.constraints is not None:
                self.constraints.mask(self.flat.encoder)  # refuses unusable ones before training
            self.summary = {
                "flat": self.flat.fit(data, self.train_config, progress, dp, ray_workers)
            }
            if dp is not None:
                self.privacy = privacy_record(dp, self.summary["flat"])
            return self
        if constraints:
            raise ConstraintError("constraints are for flat tables, not sequential ones")
        self._fit_sequential(data, context, context_key, progress, ray_workers)
        return self

    def _fit_sequential(
        self,
        events: pd.DataFrame,
        context: pd.DataFrame | None,
        key: str,
        progress: ProgressCallback | None,
        ray_workers: int | None,
    ) -> None:
        if key not in events.columns:
            raise ValueError(f"context_key {key!r} is not a column of the event table")
        if context is None:
            context = pd.DataFrame({key: events[key].drop_duplicates()})
        context = _string_columns(context).drop_duplicates(subset=[key])
        self.context_key = key
        self.key_dtype = str(events[key].dtype)

        # Group event rows per entity, keeping their order within the entity.
        entity_index = pd.Index(context[key])
        position = entity_index.get_indexer(events[key])
        events, position = events[position >= 0], position[position >= 0]
        order = np.argsort(position, kind="stable")
        events = events.iloc[order].reset_index(drop=True)
        lengths = np.bincount(position[order], minlength=len(context))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        # Sequence lengths are clipped like any numeric value: no entity's length leaks.
        max_length = max(1, int(protected_bounds(lengths, self.options.rare_min_count)[1]))
        lengths = np.minimum(lengths, max_length)

        context_frame = context.drop(columns=[key]).assign(**{LENGTH_COLUMN: lengths})
        event_frame = events.drop(columns=[key])
        self.flat = _FlatPart.create(context_frame, self.options, self.dropout)
        self.events_encoder = TableEncoder.fit(event_frame, self.options)
        n_event_columns = len(self.events_encoder.columns)
        config = SequenceConfig(
            events=NetConfig(
                cardinalities=self.events_encoder.cardinalities,
                column_of_sub=self.events_encoder.column_of_sub,
                hidden=auto_hidden(len(self.events_encoder.cardinalities)),
                dropout=self.dropout,
            ),
            context_cardinalities=self.flat.encoder.cardinalities,
            max_length=max_length,
        )
        config.events.extra_dim = extra_dim(config)
        net = SequenceNet(config)
        self.sequence_net = net

        budget = self.train_config.max_minutes
        context_config = TrainConfig(
            **{**self.train_config.to_dict(), "max_minutes": budget and budget * 0.2}
        )
        events_config = TrainConfig(
            **{**self.train_config.to_dict(), "max_minutes": budget and budget * 0.8}
        )
        context_summary = self.flat.fit(
            context_frame, context_config, _staged(progress, "context"), ray_workers=ray_workers
        )

        event_codes = torch.from_numpy(self.events_encoder.encode(event_frame))
        context_codes = torch.from_numpy(self.flat.encoder.encode(context_frame))
        starts_t, lengths_t = torch.from_numpy(starts), torch.from_numpy(lengths)
        last_row = max(len(event_codes) - 1, 0)

        def loss_of(batch: np.ndarray, generator: torch.Generator) -> torch.Tensor:
            entities = torch.from_numpy(batch)
            batch_lengths = lengths_t[entities]
            steps = max(int(batch_lengths.max()), 1)
            step_range = torch.arange(steps)
            valid = step_range[None, :] < batch_lengths[:, None]
            rows = (starts_t[entities][:, None] + step_range[None, :]).clamp(max=last_row)
            padded = event_codes[rows] * valid[..., None]
            return net.loss(
                context_codes[entities], padded, valid, _random_rank(n_event_columns, generator)
            )

        events_summary = _train(
            net,
            len(context_frame),
            loss_of,
            events_config,
            _staged(progress, "events"),
            ray_workers,
            batch_cap=256,
        )
        self.summary = {"context": context_summary, "events": events_summary}

    # --------------------------------------------------------------- sample
    def sample(
        self,
        n_rows: int | None = None,
        seed_data: pd.DataFrame | None = None,
        context: pd.DataFrame | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> pd.DataFrame:
        """Synthetic rows.

        Flat: `n_rows` rows, or one row per row of `seed_data` whose cells are kept.
        Sequential: the event table for `n_rows` new entities, or for each row of
        `context` (which must hold the key column); `sample_with_context` also
        returns the entities' context rows.
        """
        if self.flat is None:
            raise RuntimeError("fit or load a model first")
        if not self.is_sequential:
            if context is not None:
                raise ValueError("context is for sequential models; use seed_data for flat ones")
            generator, rng = _randomness(seed)
            return self._sample_flat(n_rows, seed_data, temperature, top_p, generator, rng)
        return self.sample_with_context(n_rows, context, temperature, top_p, seed)[1]

    def sample_with_context(
        self,
        n_rows: int | None = None,
        context: pd.DataFrame | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A sequential model's (context, events) tables: `n_rows` new entities, or `context`'s."""
        if not self.is_sequential:
            raise RuntimeError("sample_with_context needs a fitted sequential model")
        generator, rng = _randomness(seed)
        return self._sample_sequential(n_rows, context, temperature, top_p, generator, rng)

    def _sample_flat(
        self,
        n_rows: int | None,
        seed_data: pd.DataFrame | None,
        temperature: float,
        top_p: float,
        generator: torch.Generator,
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        assert self.flat is not None
        encoder = self.flat.encoder
        derived = self.constraints.derived if self.constraints is not None else []
        if seed_data is not None:
            seed_frame = _string_columns(seed_data)
            unknown = [
                c for c in seed_frame.columns if c not in encoder.columns and c not in derived
            ]
            if unknown:
                raise ValueError(f"seed columns not in the model: {unknown}")
        elif n_rows is not None:
            seed_frame = pd.DataFrame(index=range(n_rows))
        else:
            raise ValueError("give n_rows or seed_data")
        modelled = [c for c in seed_frame.columns if c not in derived]
        fixed = np.zeros((len(seed_frame), len(encoder.columns)), dtype=bool)
        fixed[:, [encoder.columns.index(c) for c in modelled]] = True
        codes = self.flat.draw(
            seed_frame[modelled], fixed, temperature, top_p, generator, row_mask=self._row_mask()
        )
        synthetic = encoder.decode(codes, rng)
        # Seed cells are copied back verbatim: encoding may be lossy (bins, clipping).
        for column in seed_frame.columns:
            synthetic[column] = seed_frame[column]
        if self.constraints is None:
            return synthetic
        drawn = {
            c: np.full(len(synthetic), c not in seed_frame.columns)
            for c in self.constraints.columns
        }
        return self.constraints.enforce(synthetic, drawn)

    def _row_mask(self) -> RowMask | None:
        if self.constraints is None or self.flat is None:
            return None
        return self.constraints.mask(self.flat.encoder)

    def violations(self, frame: pd.DataFrame) -> dict[str, int]:
        """Rows of a flat table that break each of the model's constraints (by its label)."""
        if self.constraints is None:
            return {}
        return self.constraints.violations(_string_columns(frame))

    def _sample_sequential(
        self,
        n_rows: int | None,
        context: pd.DataFrame | None,
        temperature: float,
        top_p: float,
        generator: torch.Generator,
        rng: np.random.Generator,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        assert (
            self.flat is not None
            and self.sequence_net is not None
            and self.events_encoder is not None
        )
        key = str(self.context_key)
        encoder = self.flat.encoder
        if context is not None:
            given = _string_columns(context)
            if key not in given.columns:
                raise ValueError(f"the context table needs the key column {key!r}")
            keys = given[key]
            seed_frame = given.drop(columns=[key])
            fixed = np.zeros((len(seed_frame), len(encoder.columns)), dtype=bool)
            fixed[:, [encoder.columns.index(c) for c in seed_frame.columns]] = True
        elif n_rows is not None:
            keys = pd.Series(np.arange(n_rows))
            if not any(t in str(self.key_dtype) for t in ("int", "float")):
                keys = keys.astype(str)
            seed_frame = pd.DataFrame(index=range(n_rows))
            fixed = np.zeros((n_rows, len(encoder.columns)), dtype=bool)
        else:
            raise ValueError("give n_rows or context")
        context_codes = self.flat.draw(seed_frame, fixed, temperature, top_p, generator)
        decoded_context = encoder.decode(context_codes, rng)
        lengths = decoded_context.pop(LENGTH_COLUMN).to_numpy(dtype=np.int64)
        lengths = np.clip(lengths, 0, self.sequence_net.config.max_length)
        banned = banned_tokens(
            self.sequence_net.argn, [s["suppress"] for s in self.events_encoder.sub_columns]
        )
        entity_parts, step_parts, code_parts = [], [], []
        chunk = 4096
        for start in range(0, len(lengths), chunk):
            entity, step, codes = self.sequence_net.generate(
                torch.from_numpy(context_codes[start : start + chunk]),
                lengths[start : start + chunk],
                banned,
                temperature,
                top_p,
                generator,
            )
            entity_parts.append(entity + start)
            step_parts.append(step)
            code_parts.append(codes)
        entity = np.concatenate(entity_parts) if entity_parts else np.zeros(0, dtype=int)
        step = np.concatenate(step_parts) if step_parts else np.zeros(0, dtype=int)
        codes = (
            np.concatenate(code_parts)
            if code_parts
            else np.zeros((0, len(self.events_encoder.cardinalities)), dtype=np.int64)
        )
        order = np.lexsort((step, entity))
        events = self.events_encoder.decode(codes[order], rng)
        events.insert(0, key, keys.iloc[entity[order]].to_numpy())
        if context is not None:
            synthetic_context = _string_columns(context)
        else:
            synthetic_context = decoded_context
            synthetic_context.insert(0, key, keys.to_numpy())
        return synthetic_context, events

    # --------------------------------------------------------------- impute
    def impute(
        self,
        data: pd.DataFrame,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> pd.DataFrame:
        """Fill the missing cells of a flat table; known cells are kept as they are."""
        if self.flat is None:
            raise RuntimeError("fit or load a model first")
        if self.is_sequential:  # the caller's mistake, not the program's: a ValueError
            raise ValueError("impute needs a fitted flat model")
        generator, rng = _randomness(seed)
        encoder = self.flat.encoder
        frame = _string_columns(data)
        known = np.zeros((len(frame), len(encoder.columns)), dtype=bool)
        for index, column in enumerate(encoder.columns):
            if column in frame.columns:
                known[:, index] = frame[column].notna().to_numpy()
        codes = self.flat.draw(
            frame,
            known,
            temperature,
            top_p,
            generator,
            ban_missing=True,
            row_mask=self._row_mask(),
        )
        drawn = encoder.decode(codes, rng)
        result = frame.copy()
        for column in encoder.columns:
            if column not in result.columns:
                result[column] = drawn[column]
                continue
            missing = result[column].isna().to_numpy()
            if not missing.any():
                continue
            filled = result[column].astype(object)
            filled[missing] = drawn[column].astype(object)[missing]
            result[column] = _like(filled, drawn[column].dtype, result[column].dtype)
        if self.constraints is None:
            return result
        gaps = {
            c: frame[c].isna().to_numpy() if c in frame.columns else np.ones(len(frame), bool)
            for c in self.constraints.columns
        }
        return self.constraints.enforce(result, gaps)

    # ---------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write safetensors weights and JSON metadata into `directory`."""
        if self.flat is None:
            raise RuntimeError("nothing to save: fit a model first")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"flat.{k}": v for k, v in self.flat.net.state_dict().items()}
        if self.sequence_net is not None:
            tensors.update({f"sequence.{k}": v for k, v in self.sequence_net.state_dict().items()})
        save_file(
            {k: v.detach().contiguous() for k, v in tensors.items()}, str(path / WEIGHTS_FILE)
        )
        meta = {
            "format": FORMAT,
            "train_config": self.train_config.to_dict(),
            "options": self.options.to_dict(),
            "dropout": self.dropout,
            "context_key": self.context_key,
            "key_dtype": self.key_dtype,
            "flat": {"encoder": self.flat.encoder.to_dict(), "net": self.flat.net.config.to_dict()},
            "sequence": None
            if self.sequence_net is None or self.events_encoder is None
            else {
                "encoder": self.events_encoder.to_dict(),
                "net": self.sequence_net.config.to_dict(),
            },
            "summary": _json_safe(self.summary),
            "constraints": None if self.constraints is None else self.constraints.to_dict(),
            "source_violations": self.source_violations,
            "privacy": self.privacy,
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TabularARGN:
        path = Path(directory)
        meta = json.loads((path / META_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} does not hold a {FORMAT} model")
        model = cls(**meta["train_config"], **meta["options"])
        model.dropout = meta["dropout"]
        model.context_key = meta["context_key"]
        model.key_dtype = meta["key_dtype"]
        tensors = load_file(str(path / WEIGHTS_FILE))
        flat_net = ARGNNet(NetConfig(**meta["flat"]["net"]))
        flat_net.load_state_dict(_prefixed(tensors, "flat."))
        model.flat = _FlatPart(TableEncoder.from_dict(meta["flat"]["encoder"]), flat_net.eval())
        if meta["sequence"] is not None:
            model.events_encoder = TableEncoder.from_dict(meta["sequence"]["encoder"])
            model.sequence_net = SequenceNet(SequenceConfig.from_dict(meta["sequence"]["net"]))
            model.sequence_net.load_state_dict(_prefixed(tensors, "sequence."))
            model.sequence_net.eval()
        model.summary = meta.get("summary", {})
        if meta.get("constraints") is not None:
            model.constraints = Constraints.from_dict(meta["constraints"])
        model.source_violations = meta.get("source_violations", {})
        model.privacy = meta.get("privacy")
        return model


def _train(
    module: torch.nn.Module,
    n_items: int,
    loss_of: LossFunction,
    config: TrainConfig,
    progress: ProgressCallback | None,
    ray_workers: int | None,
    batch_cap: int = 1024,
) -> dict[str, Any]:
    """`train` in this process, or on `ray_workers` Ray Train workers."""
    if ray_workers is None:
        return train(module, n_items, loss_of, config, progress, batch_cap)
    # Ray is an extra (`synthgraph[ray]`): imported only when a fit asks for it.
    from synthgraph.tabular.ray_train import train_on_ray

    return train_on_ray(module, n_items, loss_of, config, ray_workers, progress, batch_cap)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _staged(progress: ProgressCallback | None, stage: str) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda event: progress({**event, "stage": stage})


def _randomness(seed: int | None) -> tuple[torch.Generator, np.random.Generator]:
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return generator, rng


def _like(values: pd.Series, drawn_dtype: Any, original_dtype: Any) -> pd.Series:
    """Imputed columns get the model's dtype when no gap is left, else the input's."""
    for dtype in (drawn_dtype, original_dtype):
        try:
            return values.astype(dtype)
        except (TypeError, ValueError):
            continue
    return values


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
