"""Keeps the benchmark suite from rotting: ``python -m bench --quick`` must run end to end
and write a complete CSV (every column, every case, a finite time for every provider),
the markdown summary and the plots; ``bench/cpu_speed.py --quick`` must print its table."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a repository tool, not part of the installed package
    sys.path.insert(0, str(ROOT))

from bench import cases, report  # noqa: E402
from bench.runner import main  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-quick")
    rc = main(["--quick", "--device", "cpu", "--out", str(out), "-q"])
    csvs = list(out.glob("*.csv"))
    assert len(csvs) == 1, csvs
    return rc, out, csvs[0], report.read_csv(csvs[0])


def test_quick_run_succeeds(quick_run):
    rc, *_ = quick_run
    assert rc == 0, "a provider failed or disagreed with the eager formula (see stderr)"


def test_csv_has_expected_columns_and_rows(quick_run):
    _, _, path, rows = quick_run
    with open(path, encoding="utf-8") as f:
        assert f.readline().strip().split(",") == report.COLUMNS
    providers = ["eager"] + [f"fastgen-{b}" for b in cases.fastgen_backends(torch.device("cpu"))]
    sizes = [f"{b}x{d}" for b, d in cases.SIZES["quick"]]
    for op, spec in cases.OPS.items():
        for prov in providers:
            for dtype in cases.DTYPES:
                for shape in sizes:
                    got = {r["mode"] for r in rows if (r["op"], r["provider"], r["dtype"], r["shape"])
                           == (op, prov, dtype, shape)}
                    assert got == set(spec.modes), (op, prov, dtype, shape, got)
    clip_provs = {r["provider"] for r in rows if r["op"] == report.CLIP_OP}
    assert clip_provs == {"eager", "foreach", *providers[1:]}
    for step in report.STEP_OPS:
        assert {r["provider"] for r in rows if r["op"] == step} == set(providers), step


def test_every_row_has_a_finite_time_and_environment(quick_run):
    _, _, _, rows = quick_run
    assert rows
    for r in rows:
        for key in ("median_ms", "p20_ms", "p80_ms"):
            v = float(r[key])
            assert math.isfinite(v) and v > 0, (r["op"], r["provider"], key, r[key])
        assert float(r["p20_ms"]) <= float(r["median_ms"]) <= float(r["p80_ms"])
        assert r["date"] and r["device"] and r["torch"] == torch.__version__
        if r["op"] not in report.STEP_OPS:
            assert int(r["bytes"]) > 0 and float(r["gbps"]) > 0 and float(r["pct_of_copy"]) > 0
    # the textbook reparameterization keeps eps (and std) alive for backward
    eager = [r for r in rows if (r["op"], r["provider"], r["mode"]) == ("reparameterize", "eager", "fwd")]
    assert eager and all(int(r["saved_bytes"]) > 0 for r in eager)


def test_markdown_and_plots_written(quick_run):
    _, out, path, _ = quick_run
    md = path.with_suffix(".md").read_text(encoding="utf-8")
    for op in cases.OPS:
        assert f"## {op}" in md
    assert "## clip_weights" in md and "vae_step" in md
    pngs = {p.name for p in out.glob("*.png")}
    for op in list(cases.OPS) + [report.CLIP_OP]:
        assert f"{path.stem}-{op}.png" in pngs


def test_csv_append_refuses_a_different_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("date,op\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="columns"):
        report.append_csv(path, [{"op": "clamp"}])


def test_cpu_speed_quick(capsys):
    from bench import cpu_speed

    assert cpu_speed.main(["--quick"]) == 0
    text = capsys.readouterr().out
    assert "| reparameterize forward+backward |" in text
    assert "clip_weights_ 9-tensor DCGAN critic" in text


@pytest.mark.slow
def test_quick_run_with_torch_compile(tmp_path):
    """The compile provider (tens of seconds of compilation on a cold cache)."""
    rc = main(["--quick", "--device", "cpu", "--out", str(tmp_path), "-q", "--providers", "eager,compile",
               "--ops", "reparameterize_kl,clamp", "--dtypes", "float32", "--no-clip", "--no-steps",
               "--no-plots"])
    assert rc == 0
    rows = report.read_csv(next(tmp_path.glob("*.csv")))
    assert {r["provider"] for r in rows} == {"eager", "compile"}
    assert all(math.isfinite(float(r["median_ms"])) for r in rows)
