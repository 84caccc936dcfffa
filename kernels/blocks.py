"""Tile sizes for the fused SwiGLU MLP kernel, chosen from the shapes (and overridable).

Axes (glossary of `jaxkn.model`): R rows (tokens x prompts x integration steps, flattened), D model width,
F neurons (d_ff). The kernel's grid runs over (row tiles, F tiles); the F axis is a reduction for the output.

Two schedules, one per lowering:
- "sequential" (TPU Mosaic; the default in interpret mode): the grid's F axis runs in order on one core, so the
  output row tile stays resident and accumulates in float32 across F steps. D is not tiled (a block spanning
  the whole axis is always legal on TPU).
- "atomic" (GPU Triton): Triton runs grid programs in parallel, so each (row tile, F tile) program adds its
  partial output into a zero-initialised float32 buffer with atomic adds (split-F, as split-K GEMMs do). D is
  walked in chunks of `model` inside the kernel, so every loaded value has power-of-two sides (Triton needs
  that).

A tile that divides its axis is preferred, because padding the weights to a tile multiple copies them on every
call; a shape no candidate divides is padded (with zeros, which contribute nothing) rather than rejected.
Real checkpoints need no weight padding: F = 11008 = 43 * 256, 14336 = 7 * 2048, 1536 = 3 * 512, and
D = 4096, 576 = 9 * 64.
"""

from __future__ import annotations

import dataclasses

SCHEDULES = ("sequential", "atomic")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SwigluBlocks:
    """Tile sizes and schedule of one kernel call (hashable: a static argument).

    Attributes:
      rows: row tile (tm); rows are padded up to a multiple of it.
      ff: neuron tile (tf); F is padded up to a multiple of it when it does not divide F.
      model: D chunk (tk) walked inside the "atomic" kernel; unused by "sequential".
      schedule: "sequential" (TPU, interpret) or "atomic" (GPU Triton).
      num_warps / num_stages: Triton settings (GPU only).
    """

    rows: int
    ff: int
    model: int = 64
    schedule: str = "sequential"
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown kernel schedule {self.schedule!r}; choose one of {SCHEDULES}")
        for name in ("rows", "ff", "model"):
            if getattr(self, name) <= 0:
                raise ValueError(f"block size {name} must be positive, got {getattr(self, name)}")
        if self.schedule == "atomic":
            for name in ("rows", "ff", "model"):
                value = getattr(self, name)
                if value & (value - 1) or value < 16:
                    raise ValueError(
                        f"the atomic (Triton) schedule needs power-of-two blocks >= 16; {name}={value}"
                    )

    def replace(self, **changes) -> SwigluBlocks:
        return dataclasses.replace(self, **changes)


# Per-backend targets: (row tile cap, neuron tile cap, smallest neuron tile worth keeping, D chunk cap).
_TARGETS = {
    # v5e/v6e: 128-lane vregs and 128/256-wide MXUs; F tile a multiple of 128 (lane rule), rows of 8/16.
    "tpu": dict(rows=256, ff=512, ff_min=128, model=512, row_min=16),
    # H100: split-F programs of [tm, tf] with gate/up accumulators in registers; 64x128 keeps them small.
    "gpu": dict(rows=64, ff=128, ff_min=16, model=64, row_min=16),
    # Interpret mode runs the grid as a loop: fewer, larger tiles are faster, and any size is legal.
    "interpret": dict(rows=128, ff=256, ff_min=8, model=64, row_min=8),
}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _dividing_tile(size: int, cap: int, floor: int) -> int:
    """The largest power of two in [floor, cap] dividing `size`; `cap` when none does (the axis is padded)."""
    tile = cap
    while tile >= floor:
        if size % tile == 0:
            return tile
        tile //= 2
    return cap


def choose_blocks(n_rows: int, d_model: int, d_ff: int, *, target: str, **overrides) -> SwigluBlocks:
    """Tiles for R x D x F on `target` ("gpu", "tpu" or "interpret"); keyword overrides win.

    The row tile is the smallest power of two covering R up to the cap (R = 20 rows -> 32, not 256, so a
    short batch does not pay for padding rows).
    """
    if target not in _TARGETS:
        raise ValueError(f"unknown kernel target {target!r}; choose one of {sorted(_TARGETS)}")
    t = _TARGETS[target]
    rows = min(t["rows"], max(t["row_min"], _next_power_of_two(n_rows)))
    ff_cap = min(t["ff"], max(t["ff_min"], _next_power_of_two(d_ff)))
    chosen = dict(
        rows=rows,
        ff=_dividing_tile(d_ff, ff_cap, t["ff_min"]),
        model=_dividing_tile(d_model, min(t["model"], max(16, _next_power_of_two(d_model))), 16),
        schedule="atomic" if target == "gpu" else "sequential",
    )
    chosen.update(overrides)
    return SwigluBlocks(**chosen)


__all__ = ["SCHEDULES", "SwigluBlocks", "choose_blocks", "round_up"]
