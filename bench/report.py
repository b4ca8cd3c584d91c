"""Writing results: CSV rows appended to ``<out>/<device>.csv``, a markdown summary of the
run (``<device>.md``, speed-ups computed only between rows of the same run) and one PNG
per op and event_dims (``<device>-<op>.png``; ``<device>-<op>-event_dims0.png`` for the
element-wise cases)."""
from __future__ import annotations

import csv
import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

COLUMNS = [
    "date", "device", "torch", "triton", "cuda", "fastgen",
    "op", "provider", "mode", "dtype", "shape", "event_dims", "numel",
    "median_ms", "p20_ms", "p80_ms", "bytes", "gbps", "pct_of_copy",
    "peak_mem_bytes", "saved_bytes", "launches",
    # extra context, after the contract's columns
    "timer", "reps", "threads",
]

STEP_OPS = ("vae_step", "wgan_step", "iwae_step[K=5]", "iwae_step[K=50]", "wgan_gp_step")
CLIP_OP = "clip_weights"
MODE_ORDER = ("fwd", "fwd-grad", "bwd", "full")


def _mode_key(mode: str) -> int:
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def _ed(r: Dict) -> str:
    """event_dims of a row as text ("" for ops without it), for rows in memory or read back."""
    v = r.get("event_dims")
    return "" if v is None or v == "" else str(int(v))


def plot_name(slug: str, op: str, event_dims: str = "") -> str:
    """``<slug>-<op>.png``; the element-wise (event_dims=0) cases: ``<slug>-<op>-event_dims0.png``."""
    return f"{slug}-{op}.png" if event_dims in ("", "1") else f"{slug}-{op}-event_dims{event_dims}.png"


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.6g}"
    return str(v)


def check_csv(path: Path) -> None:
    """Refuse (RuntimeError) an existing CSV whose header is not ``COLUMNS``; checked before a
    run starts, so a long run is not lost at the end."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    if header != COLUMNS:
        raise RuntimeError(
            f"{path} has columns {header}, expected {COLUMNS}; move it aside to start a new file")


def append_csv(path: Path, rows: Sequence[Dict]) -> None:
    """Append rows; the header is written for a new file and checked for an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    check_csv(path)
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in COLUMNS})


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- markdown

def _ms(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.2f}"
    if v >= 0.01:
        return f"{v:.3f}"
    return f"{v:.4f}"


def _ratio(a, b) -> str:
    if a is None or b is None or not b or not a:
        return "-"
    return f"{a / b:.2f}x"


def _mib(v) -> str:
    if v is None or v == "":
        return "-"
    v = float(v)
    if v == 0:
        return "0"
    if v < 1 << 20:
        return f"{v / 1024:.1f} KiB"
    return f"{v / (1 << 20):.1f} MiB"


def _providers_in(rows: Iterable[Dict]) -> List[str]:
    order = OrderedDict()
    for r in rows:
        order.setdefault(r["provider"], None)
    return list(order)


def _size_key(shape: str):
    try:
        return [int(p) for p in shape.split(" ")[0].split("x")]
    except ValueError:
        return [shape]


def _dtype_key(dtype: str) -> int:
    order = ["float32", "bfloat16", "float16", "float64"]
    return order.index(dtype) if dtype in order else len(order)


def op_table(rows: List[Dict], op: str) -> List[str]:
    rows = [r for r in rows if r["op"] == op]
    provs = _providers_in(rows)
    fused = [p for p in provs if p.startswith("fastgen")]
    with_ed = any(_ed(r) for r in rows)
    head = ["mode"] + (["event_dims"] if with_ed else []) + ["dtype", "shape"] + [f"{p} ms" for p in provs]
    if "compile" in provs and "eager" in provs:
        head.append("compile vs eager")
    has_compile = "compile" in provs
    for f in fused:
        head += [f"{f} vs eager"] + ([f"{f} vs compile"] if has_compile else []) + [f"{f} % copy"]
    head.append("saved for bwd (" + " / ".join(provs) + ")")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: "OrderedDict[tuple, Dict[str, Dict]]" = OrderedDict()
    for r in sorted(rows, key=lambda r: (_mode_key(r["mode"]), -int(_ed(r) or 1), _dtype_key(r["dtype"]),
                                         _size_key(r["shape"]))):
        groups.setdefault((r["mode"], _ed(r), r["dtype"], r["shape"]), {})[r["provider"]] = r
    for (mode, ed, dtype, shape), by in groups.items():
        t = {p: by[p]["median_ms"] for p in by}
        cells = [mode] + ([ed or "-"] if with_ed else []) + [dtype, shape] + [_ms(t.get(p)) for p in provs]
        if "compile" in provs and "eager" in provs:
            cells.append(_ratio(t.get("eager"), t.get("compile")))
        for f in fused:
            pct = by.get(f, {}).get("pct_of_copy")
            cells += [_ratio(t.get("eager"), t.get(f))]
            if has_compile:
                cells.append(_ratio(t.get("compile"), t.get(f)))
            cells.append("-" if pct is None else f"{pct:.0f}%")
        cells.append(" / ".join(_mib(by.get(p, {}).get("saved_bytes")) for p in provs))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def clip_table(rows: List[Dict]) -> List[str]:
    rows = [r for r in rows if r["op"] == CLIP_OP]
    provs = _providers_in(rows)
    fused = [p for p in provs if p.startswith("fastgen")]
    head = ["dtype", "tensors", "numel"] + [f"{p} ms" for p in provs]
    for f in fused:
        head += [f"{f} vs loop", f"{f} vs foreach"]
    head.append("launches/op calls (" + " / ".join(provs) + ")")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: "OrderedDict[tuple, Dict[str, Dict]]" = OrderedDict()
    for r in rows:
        groups.setdefault((r["dtype"], r["shape"], r["numel"]), {})[r["provider"]] = r
    for (dtype, shape, numel), by in groups.items():
        t = {p: by[p]["median_ms"] for p in by}
        cells = [dtype, shape, str(numel)] + [_ms(t.get(p)) for p in provs]
        for f in fused:
            cells += [_ratio(t.get("eager"), t.get(f)), _ratio(t.get("foreach"), t.get(f))]
        cells.append(" / ".join(_fmt(by.get(p, {}).get("launches")) or "-" for p in provs))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def step_table(rows: List[Dict]) -> List[str]:
    rows = [r for r in rows if r["op"] in STEP_OPS]
    lines = ["| step | provider | shape | median ms | p20 ms | p80 ms | vs eager | peak mem |",
             "|---|---|---|---|---|---|---|---|"]
    base = {}
    for r in rows:
        p = r["provider"]
        if p == "eager" or p == "eager+cudagraph":
            base[(r["op"], p.endswith("+cudagraph"))] = r["median_ms"]
    for r in rows:
        b = base.get((r["op"], False))  # every variant against the plain eager step
        lines.append(f"| {r['op']} | {r['provider']} | {r['shape']} | {_ms(r['median_ms'])} | "
                     f"{_ms(r['p20_ms'])} | {_ms(r['p80_ms'])} | {_ratio(b, r['median_ms'])} | "
                     f"{_mib(r.get('peak_mem_bytes'))} |")
    return lines



def write_markdown(path: Path, rows: List[Dict], *, header: Dict[str, str], notes: Dict[str, str]) -> None:
    """Tables of one run. Ratios are t(baseline) / t(provider) from the same run."""
    lines = [f"# fastgen benchmarks on {header['device_name']}", ""]
    lines += [f"- date: {header['date']}", f"- torch {header['torch']}, triton {header['triton'] or '-'}, "
              f"CUDA {header['cuda'] or '-'}, fastgen {header['fastgen'] or '-'}",
              f"- host at start: {header['load']}",
              f"- timing: {header.get('timing', '-')}",
              f"- command: `{header['command']}`", ""]
    lines += ["Times are medians (ms). `X vs eager` = t(eager) / t(X): above 1x means X is faster. "
              "`% copy` = bandwidth achieved with the ideal fused kernel's bytes, as a percentage of a "
              "plain copy of the same bytes timed in this run. `saved for bwd` = bytes autograd keeps "
              "alive between forward and backward beyond the inputs. "
              "fwd = forward under torch.no_grad(); fwd-grad = training forward (inputs require grad, "
              "autograd records the graph); bwd = backward of one recorded forward; full = fwd-grad + bwd. "
              "event_dims 1 = per-sample sums over the last dimension, 0 = element-wise (no sum).", ""]
    ops = [o for o in OrderedDict((r["op"], None) for r in rows) if o not in STEP_OPS and o != CLIP_OP]
    for op in ops:
        lines += [f"## {op}", ""]
        if notes.get(op):
            lines += [notes[op], ""]
        lines += op_table(rows, op) + [""]
    if any(r["op"] == CLIP_OP for r in rows):
        lines += [f"## {CLIP_OP}", "",
                  "In-place clamp of every tensor to [-0.01, 0.01]. `eager` = per-parameter "
                  "`p.data.clamp_(-c, c)` loop, `foreach` = `torch._foreach_clamp_min_` + "
                  "`torch._foreach_clamp_max_`. Launches: CUDA kernels (profiler) or, on CPU, "
                  "operator calls reaching the dispatcher.", ""]
        lines += clip_table(rows) + [""]
    if any(r["op"] in STEP_OPS for r in rows):
        lines += ["## End-to-end training steps", "",
                  "`vae_step`: 784-400-20 MLP VAE, Bernoulli decoder, Adam, one step. "
                  "`wgan_step`: one critic step (weight clipping, RMSprop) + one generator step, "
                  "DCGAN-sized networks. `iwae_step[K=k]`: the same VAE trained on the k-sample IWAE "
                  "bound (fastgen: `reparameterize_log_weights`). `wgan_gp_step`: one WGAN-GP critic "
                  "step, 28x28 layer-norm critic, lambda = 10 (fastgen: `gradient_penalty`). "
                  "`+cudagraph`: the whole step captured once and replayed.", ""]
        lines += step_table(rows) + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------- plots

def write_plots(out_dir: Path, slug: str, rows: List[Dict]) -> List[Path]:
    """``<slug>-<op>.png``: time and % of copy bandwidth against size, one line per provider
    (solid float32, dashed bfloat16), one row of panels per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    written = []
    keys = [k for k in OrderedDict(((r["op"], _ed(r)), None) for r in rows) if k[0] not in STEP_OPS]
    for op, ed in keys:
        sub = [r for r in rows if r["op"] == op and _ed(r) == ed]
        provs = _providers_in(sub)
        if op == CLIP_OP:
            fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
            panels = [("median_ms", "time (ms)"), ("launches", "launches / op calls")]
            modes = ["fwd"]
            xkey, xlabel = "count", "parameter tensors"
        else:
            modes = [m for m in MODE_ORDER if any(r["mode"] == m for r in sub)]
            fig, axes = plt.subplots(len(modes), 2, figsize=(11, 3.6 * len(modes)), squeeze=False)
            panels = [("median_ms", "time (ms)"), ("pct_of_copy", "% of copy bandwidth")]
            xkey, xlabel = "numel", "elements"
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, mode in enumerate(modes):
            for j, (ykey, ylabel) in enumerate(panels):
                ax = axes[i][j]
                for k, prov in enumerate(provs):
                    for dtype, style in (("float32", "-"), ("bfloat16", "--")):
                        pts = []
                        for r in sub:
                            if r["provider"] != prov or r["mode"] != mode or r["dtype"] != dtype:
                                continue
                            x = r["numel"] if xkey == "numel" else r.get("count", r["numel"])
                            y = r.get(ykey)
                            if y is None or y == "":
                                continue
                            pts.append((float(x), float(y)))
                        if not pts:
                            continue
                        pts.sort()
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o",
                                markersize=3, color=colors[k % len(colors)],
                                label=f"{prov} {dtype}")
                ax.set_xscale("log")
                # no minor log ticks (they cost most of the drawing time); labelled 1-2-5 steps
                ax.xaxis.set_minor_locator(NullLocator())
                if ykey in ("median_ms", "launches"):
                    ax.set_yscale("log")
                    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                    ax.yaxis.set_minor_locator(NullLocator())
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
                title = op if op == CLIP_OP else f"{op} {mode}" + (f" event_dims={ed}" if ed else "")
                ax.set_title(title)
                ax.grid(True, which="major", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)), fontsize=8,
                       bbox_to_anchor=(0.5, 1 - 0.15 / fig.get_figheight()))
        fig.suptitle(slug, fontsize=9, y=0.995)
        top = 1 - 0.9 / fig.get_figheight()  # leave room for the legend above the panels
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.55 / fig.get_figheight(),
                            top=top, hspace=0.45, wspace=0.22)
        path = out_dir / plot_name(slug, op, ed)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
