"""The ARGN network: embeddings, permutation-masked regressors, softmax predictors.

Every sub-column k has its own regressor, a small MLP whose input is the
concatenation of all sub-column embeddings multiplied by a visibility mask: only
sub-columns that precede k in the current order are visible. Rather than running
one MLP per sub-column, the first layer of all regressors is a single matrix
product with per-target masked weights, so one forward pass yields the logits of
every sub-column. The second layer is a batched per-target matrix product.

Optional extra inputs (context and history for sequential data) are visible to
every regressor.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


def embedding_dim(cardinality: int, max_dim: int = 16) -> int:
    """Grows sub-linearly with cardinality, as in the common 1.6 * n^0.56 rule."""
    return int(min(max_dim, max(2, round(1.6 * cardinality**0.56))))


@dataclass
class NetConfig:
    cardinalities: list[int]
    column_of_sub: list[int]
    hidden: int = 64
    extra_dim: int = 0
    max_embedding_dim: int = 16
    dropout: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ARGNNet(nn.Module):
    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        cards = config.cardinalities
        self.n_sub = len(cards)
        dims = [embedding_dim(c, config.max_embedding_dim) for c in cards]
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(cards, dims, strict=True)
        )
        self.input_dim = sum(dims)
        hidden = config.hidden
        # sub_of_dim[i]: which sub-column embedding dimension i belongs to.
        self.register_buffer(
            "sub_of_dim",
            torch.repeat_interleave(torch.arange(self.n_sub), torch.tensor(dims)),
            persistent=False,
        )
        self.register_buffer("column_of_sub", torch.tensor(config.column_of_sub), persistent=False)
        self.register_buffer(
            "code_scale",
            1.0 / torch.tensor(cards, dtype=torch.float32).sub(1).clamp(min=1),
            persistent=False,
        )
        # Tokens of bins, digits and discrete values are ordered; a learned direction
        # per sub-column, scaled by the token's position, lets neighbouring tokens
        # share what they learn instead of each embedding starting from scratch.
        self.ordinal = nn.Parameter(torch.randn(self.input_dim) * 0.5)
        self.dim_offsets = [0, *torch.cumsum(torch.tensor(dims), 0).tolist()]
        bound = 1 / math.sqrt(max(self.input_dim + config.extra_dim, 1))
        self.first_weight = nn.Parameter(
            torch.empty(self.n_sub, hidden, self.input_dim).uniform_(-bound, bound)
        )
        self.first_bias = nn.Parameter(torch.zeros(self.n_sub, hidden))
        self.extra_weight = (
            nn.Parameter(torch.empty(self.n_sub, hidden, config.extra_dim).uniform_(-bound, bound))
            if config.extra_dim
            else None
        )
        bound2 = 1 / math.sqrt(hidden)
        self.second_weight = nn.Parameter(
            torch.empty(self.n_sub, hidden, hidden).uniform_(-bound2, bound2)
        )
        self.second_bias = nn.Parameter(torch.zeros(self.n_sub, hidden))
        self.heads = nn.ModuleList(nn.Linear(hidden, c) for c in cards)
        self.dropout = nn.Dropout(config.dropout)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """(batch, n_sub) codes -> (batch, input_dim) concatenated embeddings."""
        tables = torch.cat([emb(codes[:, i]) for i, emb in enumerate(self.embeddings)], dim=1)
        position = (codes * self.code_scale)[:, self.sub_of_dim]
        return tables + position * self.ordinal

    def embed_one(self, index: int, codes: torch.Tensor) -> torch.Tensor:
        start, end = self.dim_offsets[index], self.dim_offsets[index + 1]
        position = (codes * self.code_scale[index])[:, None]
        return self.embeddings[index](codes) + position * self.ordinal[start:end]

    def visibility(self, column_rank: torch.Tensor) -> torch.Tensor:
        """(n_sub, input_dim) mask from a column order given as rank per column.

        A sub-column sees every sub-column of an earlier column and the earlier
        sub-columns of its own column (digits are generated most significant first).
        """
        sub_index = torch.arange(self.n_sub, device=column_rank.device)
        key = column_rank[self.column_of_sub] * self.n_sub + sub_index
        visible_sub = key[None, :] < key[:, None]
        return visible_sub[:, self.sub_of_dim].to(self.first_weight.dtype)

    def forward(
        self, codes: torch.Tensor, column_rank: torch.Tensor, extra: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Teacher-forced logits of every sub-column, one tensor per sub-column."""
        batch = codes.shape[0]
        x = self.embed(codes)
        weight = self.first_weight * self.visibility(column_rank)[:, None, :]
        hidden = x @ weight.reshape(-1, self.input_dim).T
        hidden = hidden.reshape(batch, self.n_sub, -1) + self.first_bias
        if extra is not None and self.extra_weight is not None:
            hidden = hidden + torch.einsum("bz,khz->bkh", extra, self.extra_weight)
        hidden = self.dropout(torch.relu(hidden))
        second = torch.bmm(hidden.transpose(0, 1), self.second_weight.transpose(1, 2))
        hidden = hidden + torch.relu(second.transpose(0, 1) + self.second_bias)
        return [head(hidden[:, k]) for k, head in enumerate(self.heads)]

    def logits_one(
        self, k: int, x: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of sub-column k; x holds zeros wherever a sub-column is not visible to k."""
        hidden = x @ self.first_weight[k].T + self.first_bias[k]
        if extra is not None and self.extra_weight is not None:
            hidden = hidden + extra @ self.extra_weight[k].T
        hidden = torch.relu(hidden)
        hidden = hidden + torch.relu(hidden @ self.second_weight[k].T + self.second_bias[k])
        return self.heads[k](hidden)


def summed_cross_entropy(logits: list[torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over sub-columns, averaged over rows."""
    losses = [nn.functional.cross_entropy(lg, codes[:, k]) for k, lg in enumerate(logits)]
    return torch.stack(losses).sum()
