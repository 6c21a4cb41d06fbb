"""Draw codes from an ARGN network, one sub-column at a time.

Any subset of cells can be fixed per row: fixed cells are visible to every
regressor from the start, the others are drawn in column order and become
visible once drawn. That single routine serves unconditional generation
(nothing fixed), conditional generation (seed columns fixed) and imputation
(known cells fixed). Because training shuffles the column order, "fixed first,
the rest after" is an order the network has learned.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from synthgraph.tabular.model import ARGNNet

RowMask = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]
"""(sub-column, codes so far, known cells) -> an additive logit mask per row, or None."""


def banned_tokens(net: ARGNNet, suppress: list[list[int]]) -> list[torch.Tensor]:
    """Per sub-column additive logit masks: -inf for tokens never to be drawn."""
    masks = []
    for card, tokens in zip(net.config.cardinalities, suppress, strict=True):
        mask = torch.zeros(card)
        if tokens and len(tokens) < card:
            mask[tokens] = float("-inf")
        masks.append(mask)
    return masks


def draw(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Sample one token per row with temperature and nucleus (top-p) filtering."""
    scaled = logits / max(temperature, 1e-6)
    # Unnormalised weights are enough for inverse-CDF sampling.
    weights = torch.exp(scaled - scaled.max(dim=-1, keepdim=True).values)
    if top_p < 1.0:
        probs = weights / weights.sum(dim=-1, keepdim=True)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always the top token).
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        weights = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    # Inverse-CDF sampling: much faster than torch.multinomial for many small rows.
    # The uniform stays strictly below the total, so a zero-weight token at the
    # end can never be drawn through rounding.
    cumulative = weights.cumsum(dim=-1)
    uniform = torch.rand(weights.shape[0], 1, generator=generator) * (
        cumulative[:, -1:] * (1 - 1e-6)
    )
    return torch.searchsorted(cumulative, uniform, right=True).squeeze(-1)


@torch.no_grad()
def sample_codes(
    net: ARGNNet,
    fixed_codes: torch.Tensor,
    fixed: torch.Tensor,
    banned: list[torch.Tensor],
    column_order: list[int],
    extra: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    row_mask: RowMask | None = None,
) -> torch.Tensor:
    """Fill the unfixed cells of `fixed_codes` (batch, n_sub); `fixed` marks kept cells.

    `row_mask` bans tokens per row given the cells known so far (constraints).
    """
    codes = fixed_codes.clone()
    known = fixed.clone()
    # Embeddings of cells not yet known stay zero, which is exactly what the
    # visibility mask does in training, so no per-row mask is needed here.
    x = net.embed(codes) * fixed[:, net.sub_of_dim].to(torch.float32)
    bounds = torch.cumsum(torch.tensor([0] + [e.embedding_dim for e in net.embeddings]), 0).tolist()
    column_of_sub = net.config.column_of_sub
    for column in column_order:
        for k in (i for i, c in enumerate(column_of_sub) if c == column):
            todo = ~fixed[:, k]
            if not bool(todo.any()):
                continue
            logits = net.logits_one(k, x, extra) + banned[k]
            mask = row_mask(k, codes, known) if row_mask is not None else None
            if mask is not None:
                masked = logits + mask
                # A row left with no token (its fixed cells break a constraint) draws unmasked.
                stuck = torch.isneginf(masked).all(dim=-1, keepdim=True)
                logits = torch.where(stuck, logits, masked)
            drawn = draw(logits, temperature, top_p, generator)
            codes[:, k] = torch.where(todo, drawn, codes[:, k])
            known[:, k] = True
            x[:, bounds[k] : bounds[k + 1]] = net.embed_one(k, codes[:, k])
    return codes
