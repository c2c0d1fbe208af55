"""Causal scoring helpers: token pairs, packing same-context pairs with a tree mask, the packing probe.

Used by :class:`babelplug.hf.TransformersBackend`; importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .hf import TransformersBackend

Pairs = Sequence[Sequence[list[int]]]
"""Token pairs ``(context, continuation)``: 2-tuples or :class:`TokenPair`."""


class TokenPair(tuple):
    """``(context_ids, continuation_ids)``, unpacking like a 2-tuple, with ``resplit``:
    whether the continuation's tokens were chosen apart from ``encode(context + continuation)``."""

    resplit: bool

    def __new__(cls, context: Sequence[int], continuation: Sequence[int], resplit: bool = False) -> TokenPair:
        pair = super().__new__(cls, (list(context), list(continuation)))
        pair.resplit = resplit
        return pair


def encode_pairs(backend: TransformersBackend, requests: Sequence[tuple[str, str]]) -> list[TokenPair]:
    """Token pairs as lm-evaluation-harness makes them, but spelling the continuation exactly.

    The context's trailing whitespace moves to the continuation. The context is
    ``encode(context)``; where ``encode(context + continuation)`` starts with it,
    the continuation is the rest, as in lm-evaluation-harness. Where it does not
    (the whole text tokenizes across the boundary: Thai on byte-level BPE),
    the rest would score the wrong characters, so the continuation's tokens are
    chosen to spell exactly the continuation after the context's tokens, and the
    pair is marked ``resplit``: the whole text's own tokens from a clean token
    boundary near the context's end, else the continuation encoded on its own.
    (The continuation's own tokens keep the choices of an item comparable: each is
    scored on the tokens it has whatever precedes it.) Every choice keeps the same
    context tokens either way. If neither spells it (not seen on the built-in
    families), lm-evaluation-harness's split is kept, unmarked.
    """
    contexts, continuations = [], []
    for context, continuation in requests:
        stripped = context.rstrip()
        contexts.append(stripped)
        continuations.append(context[len(stripped) :] + continuation)
    ctx_ids = backend.tokenize(contexts)
    whole_ids = backend.tokenize([c + x for c, x in zip(contexts, continuations)])
    pairs = []
    for i, (ctx, whole) in enumerate(zip(ctx_ids, whole_ids)):
        if whole[: len(ctx)] == ctx:
            pairs.append(TokenPair(ctx or backend.prefix_ids(), whole[len(ctx) :]))
        else:
            pairs.append(_resplit(backend, ctx or backend.prefix_ids(), whole, continuations[i]) or TokenPair(ctx, whole[len(ctx) :]))
    return pairs


def _resplit(backend: TransformersBackend, ctx: list[int], whole: list[int], continuation: str) -> TokenPair | None:
    """Continuation tokens that, after ``ctx``, spell what ``whole`` spells; None if none found."""
    tok = backend.tokenizer

    def spell(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    target = spell(whole)
    near = range(max(len(ctx) - 4, 1), min(len(ctx) + 4, len(whole)))
    candidates = [whole[k:] for k in near] + [list(tok(continuation, add_special_tokens=False)["input_ids"])]
    for cont in candidates:
        if cont and spell(ctx + cont) == target:
            return TokenPair(ctx, cont, resplit=True)
    return None


def context_groups(pairs: Pairs, size: int) -> list[list[int]]:
    """Indices of pairs with the same context, at most ``size`` to a group."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        groups.setdefault(tuple(ctx), []).append(i)
    return [g[k : k + size] for g in groups.values() for k in range(0, len(g), size)]


def row_length(pairs: Pairs, group: Sequence[int]) -> int:
    """Tokens in the row a group of same-context pairs is scored in."""
    return len(pairs[group[0]][0]) + sum(max(len(pairs[i][1]) - 1, 0) for i in group)


def fill(groups: Sequence[list[int]], size: int) -> Iterator[list[int]]:
    """Consecutive groups packed into chunks of at most ``size`` indices (a bigger group alone)."""
    chunk: list[int] = []
    for group in groups:
        if chunk and len(chunk) + len(group) > size:
            yield chunk
            chunk = []
        chunk += group
    if chunk:
        yield chunk


@dataclass
class Packed:
    """The rows of one scoring batch (see :func:`pack`)."""

    ids: list[list[int]] = field(default_factory=list)
    positions: list[list[int]] = field(default_factory=list)
    segments: list[list[int]] = field(default_factory=list)
    picks: list[tuple[int, int]] = field(default_factory=list)
    """(row, column) of each hidden state the head needs."""
    sel: list[list[int]] = field(default_factory=list)
    """Per pair: the pick predicting each continuation token."""

    @property
    def width(self) -> int:
        return max(map(len, self.ids))


def pack(pairs: Pairs, mode: str) -> Packed:
    """Rows for ``pairs``: with a packing ``mode``, pairs with one context share a row,
    the context once and each continuation as a branch (positions restart after the context)."""
    rows: dict[Any, list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        rows.setdefault(tuple(ctx) if mode else i, []).append(i)
    out = Packed(sel=[[] for _ in pairs])
    for r, members in enumerate(rows.values()):
        ctx = pairs[members[0]][0]
        ids, pos, seg = list(ctx), list(range(len(ctx))), [0] * len(ctx)
        first = -1  # the context's last position predicts every branch's first token
        for branch, i in enumerate(members, 1):
            cont = pairs[i][1]
            if not cont:
                continue
            if first < 0:
                out.picks.append((r, len(ctx) - 1))
                first = len(out.picks) - 1
            out.sel[i].append(first)
            for j, tok in enumerate(cont[:-1]):
                out.sel[i].append(len(out.picks))
                out.picks.append((r, len(ids)))
                ids.append(tok)
                pos.append(len(ctx) + j)
                seg.append(branch)
        out.ids.append(ids)
        out.positions.append(pos)
        out.segments.append(seg)
    return out


def tree_mask(segments: torch.Tensor, mode: str, dtype: torch.dtype) -> torch.Tensor:
    """``[batch, 1, seq, seq]`` mask: causal, and a branch sees the context (0) and itself.

    ``segments`` is ``[batch, seq]``: 0 for context, k for branch k, -1 for padding.
    """
    import torch

    width = segments.shape[1]
    allowed = (segments[:, :, None] == segments[:, None, :]) | (segments[:, None, :] == 0)
    allowed &= torch.ones(width, width, dtype=torch.bool).tril()
    if mode == "binary":
        return allowed[:, None].to(dtype)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def probe_packing(backend: TransformersBackend) -> str:
    """How the model takes a tree mask: 'binary' (1 attends), 'additive', or '' (not at all).

    One packed row (a context and two branches) must give the hidden states of
    the two plain rows it stands for.
    """
    import warnings

    import torch

    model = backend.model
    if getattr(model.config, "is_encoder_decoder", False):
        return ""
    base = model.get_input_embeddings().num_embeddings // 3
    a, b, c, d, e = (base + k for k in range(5))
    dev = backend.device
    tol = 1e-4 if model.dtype == torch.float32 else 3e-2
    try:
        with torch.inference_mode():
            one = backend.hidden_states(torch.tensor([[a, b, c]], device=dev), torch.ones(1, 3, dtype=torch.long, device=dev))
            two = backend.hidden_states(torch.tensor([[a, b, d, e]], device=dev), torch.ones(1, 4, dtype=torch.long, device=dev))
    except Exception:  # noqa: BLE001 - a model that cannot run the probe cannot pack
        return ""
    expected = torch.cat([one[0], two[0, 2:]])
    segments = torch.tensor([[0, 0, 1, 2, 2]])
    for mode in ("binary", "additive"):
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. BLOOM warns that it ignores position_ids
                got = backend.hidden_states(
                    torch.tensor([[a, b, c, d, e]], device=dev),
                    tree_mask(segments, mode, model.dtype).to(dev),
                    torch.tensor([[0, 1, 2, 2, 3]], device=dev),
                )[0]
        except Exception:  # noqa: BLE001 - this mask convention is not the model's
            continue
        if got.shape == expected.shape and torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol):
            return mode
    return ""
