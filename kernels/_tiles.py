"""How the kernels cut their work into tiles: the rows x cols contract, autotuning, grids.

The row ops (KL, likelihoods, reparameterize_kl) see their operands as csrc/fastgen.cpp
describes: contiguous tensors whose flattened data repeat to fill rows x cols, so
row r of an operand of numel m starts at (r * cols) % m = (r % (m / cols)) * cols.

A tile is BLOCK_ROWS x BLOCK_COLS elements, BLOCK_ROWS * BLOCK_COLS = TILE (the
autotuned size): BLOCK_COLS = min(TILE, next_power_of_2(cols)), so short rows
are packed several to a tile and long rows are walked in blocks of TILE.
Per-row sums are computed by one program per (row block, split): a program
loops over its split's columns and writes one partial sum per row; a row
is split (a two-stage reduction, the second stage a sum over splits) only when
there are too few rows to fill the device. No atomics: results are
deterministic for a given shape, device and tuning.
"""

import functools
import os

import torch
import triton
import triton.language as tl

# Under TRITON_INTERPRET=1 kernels run on CPU tensors through numpy: one small
# configuration, no benchmarking, so that tests stay fast.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")

# Columns of one split of a long row: a multiple of every TILE, so that a
# split is a whole number of column blocks.
SPLIT_COLS = 8192
# Programs worth launching per streaming multiprocessor before splitting rows.
PROGRAMS_PER_SM = 4
# Stand-in multiprocessor count under the interpreter (small, so that tests
# reach the split path with small shapes).
INTERPRET_SM_COUNT = 2


# (elements per program, warps) of the autotuned configs: 4 or 8 elements per
# thread. Compiled for sm_90 (ptxas -v on Triton's PTX, float64 the worst):
# 8 elements a thread take up to 237 registers (reparameterize_log_weights
# in float64) without spilling, 4 up to 122; 16 (2048 with 4
# warps, 4096 with 8) reach 228-255 and spill, 32 (4096 with 4 warps) spill
# up to 1.4 KB a thread. 16 warps cap a thread at 128 registers, so they
# only run 4 elements a thread.
TUNED_SHAPES = ((1024, 4), (1024, 8), (2048, 8), (2048, 16))
# The config of a call captured into a CUDA graph before its key was tuned
# (see autotune): 8 elements a thread, no spills in any dtype.
CAPTURE_SHAPE = (1024, 4)


def autotune_configs(name: str) -> list[triton.Config]:
    """Configs over block size `name` (TUNED_SHAPES); one small config under the interpreter."""
    if INTERPRET:
        return [triton.Config({name: 1024}, num_warps=1)]
    return [triton.Config({name: size}, num_warps=warps) for size, warps in TUNED_SHAPES]


# Tiles of the row kernels and blocks of the flat elementwise kernels.
ROW_CONFIGS = autotune_configs("TILE")
FLAT_CONFIGS = autotune_configs("BLOCK")


def autotune(configs: list[triton.Config], key: list[str]):
    """triton.autotune, except that a call captured into a CUDA graph never benchmarks.

    Autotuning a key benchmarks every config with synchronizing timed runs,
    which a stream under CUDA-graph capture refuses (the capture is then
    invalidated). A captured call whose key is already tuned runs its tuned
    config; one whose key is not yet tuned runs CAPTURE_SHAPE's config,
    without tuning (the key is tuned by its first call outside capture).
    """

    def decorate(fn):
        tuner = triton.autotune(configs=configs, key=key)(fn)
        if len(tuner.configs) > 1:
            size_name = next(iter(tuner.configs[0].kwargs))
            pinned = next(c for c in tuner.configs if (c.kwargs[size_name], c.num_warps) == CAPTURE_SHAPE)
            tuner.run = functools.partial(_run_capture_safe, tuner, pinned)
        return tuner

    return decorate


def _run_capture_safe(tuner, pinned: triton.Config, *args, **kwargs):
    if torch.cuda.is_current_stream_capturing() and not _is_tuned(tuner, args, kwargs):
        return tuner.fn.run(*args, **kwargs, **pinned.all_kwargs())
    # The class's run, looked up per call: a patch of Autotuner.run (a test plugin's) applies.
    return type(tuner).run(tuner, *args, **kwargs)


def _is_tuned(tuner, args: tuple, kwargs: dict) -> bool:
    """Whether the call's key is tuned, the key spelt as triton's Autotuner.run spells it:
    the key arguments, then the dtype of every tensor argument."""
    named = {name: value for name, value in {**dict(zip(tuner.arg_names, args)), **kwargs}.items()
             if name in tuner.arg_names}
    key = [named[name] for name in tuner.keys if name in named]
    key += [str(value.dtype) for value in named.values() if hasattr(value, "dtype")]
    return tuple(key) in tuner.cache


def block_shape(tile: int, cols_pow2: int) -> tuple[int, int]:
    """(BLOCK_ROWS, BLOCK_COLS) of a tile.

    Every tiled kernel spells the same rule in constexprs:
    BLOCK_COLS = TILE if TILE < COLS_POW2 else COLS_POW2; BLOCK_ROWS = TILE // BLOCK_COLS.
    """
    block_cols = min(tile, cols_pow2)
    return tile // block_cols, block_cols


def row_shape(first: torch.Tensor, others: tuple, event_dims: int) -> tuple[int, int]:
    """(rows, cols) of the registry's contract (csrc/row_shape.h)."""
    cols = 1
    for size in first.shape[first.dim() - event_dims :]:
        cols *= size
    if cols == 0:  # no columns: one (zero) sum per batch element of `first`
        rows = 1
        for size in first.shape[: first.dim() - event_dims]:
            rows *= size
        return rows, 0
    total = first.numel()
    for t in others:
        if t is not None:
            total = torch.sym_max(total, t.numel())
    return total // cols, cols


def row_sum_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of per-row sums: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRET_SM_COUNT


def split_plan(rows: int, cols: int, device: torch.device) -> tuple[int, int]:
    """(splits, chunk): each row is cut into `splits` runs of `chunk` columns (the last shorter).

    A row is split only when rows alone leave the device idle and the row
    spans several SPLIT_COLS.
    """
    wanted = PROGRAMS_PER_SM * _sm_count(device)
    if rows >= wanted or cols <= SPLIT_COLS:
        return 1, cols
    splits = min(triton.cdiv(cols, SPLIT_COLS), triton.cdiv(wanted, rows))
    chunk = triton.cdiv(triton.cdiv(cols, splits), SPLIT_COLS) * SPLIT_COLS
    return triton.cdiv(cols, chunk), chunk


def row_sum_grid(rows: int, splits: int, cols_pow2: int):
    """Grid of a row-sum kernel: one program per (row block, split)."""
    return lambda meta: (triton.cdiv(rows, block_shape(meta["TILE"], cols_pow2)[0]) * splits,)


def elementwise_grid(rows: int, cols: int, cols_pow2: int):
    """Grid of a row-wise elementwise kernel: one program per tile."""

    def grid(meta):
        block_rows, block_cols = block_shape(meta["TILE"], cols_pow2)
        return (triton.cdiv(rows, block_rows) * triton.cdiv(cols, block_cols),)

    return grid


def flat_grid(numel: int):
    """Grid of a flat elementwise kernel: one program per BLOCK elements."""
    return lambda meta: (triton.cdiv(numel, meta["BLOCK"]),)


def finish_row_sums(partial: torch.Tensor) -> torch.Tensor:
    """Per-row sums from a [rows, splits] tensor of partial sums (the second stage)."""
    return partial.squeeze(1) if partial.shape[1] == 1 else partial.sum(1)


# ---------------------------------------------------------------- device side


@triton.jit
def row_sum_position(rows, cols, chunk, splits, BLOCK_ROWS: tl.constexpr):
    """This program's rows (int64 [BLOCK_ROWS, 1]), split index, and columns [begin, end)."""
    pid = tl.program_id(0).to(tl.int64)
    split = pid % splits
    row = (pid // splits) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]
    col_begin = split * chunk
    col_end = tl.minimum(col_begin + chunk, cols)
    return row, split, col_begin, col_end


@triton.jit
def elementwise_position(rows, cols, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """This program's rows (int64 [BLOCK_ROWS, 1]) and first column (int64 scalar)."""
    pid = tl.program_id(0).to(tl.int64)
    col_blocks = tl.cdiv(cols, BLOCK_COLS)
    row = (pid // col_blocks) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]
    return row, (pid % col_blocks) * BLOCK_COLS


@triton.jit
def operand_row_start(row, operand_rows, cols):
    """Offset of row `row` of an operand that repeats every `operand_rows` rows."""
    return (row % operand_rows) * cols
