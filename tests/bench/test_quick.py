"""Keeps the benchmark suite from rotting: every op of fastgen's registry has a bench case
(event_dims 0 and 1 for the row ops); ``python -m bench --quick`` must run end to end and
write a complete CSV (every column, every case and mode, a finite time for every provider,
one torch thread timed with the thread's CPU time), the markdown summary and the plots;
``bench/cpu_speed.py --quick`` and ``bench/small_sizes.py --quick`` must print their tables."""
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


def test_every_registry_op_has_a_bench_case():
    assert cases.missing_cases() == [], "add a case for these ops to bench/cases.py CASES"
    assert cases.orphan_cases() == [], "these bench cases name ops fastgen's registry does not have"
    assert {spec.op for spec in cases.OPS.values()} == set(cases.registry())


def test_row_ops_have_event_dims_0_and_1():
    for name, info in cases.registry().items():
        if info.kind == "rows":
            got = {s.event_dims for s in cases.OPS.values() if s.op == name}
            assert {0, 1} <= got, (name, got)


def test_cases_follow_the_registry_order():
    order = list(cases.registry())
    ops = [spec.op for spec in cases.OPS.values()]
    assert ops == sorted(ops, key=order.index)


def test_a_registry_op_without_a_case_fails_the_run(monkeypatch, capsys):
    real = cases.registry()
    monkeypatch.setattr(cases, "registry", lambda: {**real, "brand_new_op": None})
    assert cases.missing_cases() == ["brand_new_op"]
    rc = main(["--quick", "--device", "cpu", "--no-ops", "--no-clip", "--no-steps", "--no-plots", "-q"])
    assert rc == 1
    assert "brand_new_op" in capsys.readouterr().err


def test_fwd_runs_without_autograd_and_fwd_grad_records():
    spec = cases.OPS["gaussian_kl"]
    inputs = spec.make(4, 3, torch.float32, torch.device("cpu"))
    assert cases.mode_callable(spec.eager, inputs, "fwd")().grad_fn is None
    assert cases.mode_callable(spec.eager, inputs, "fwd-grad")().grad_fn is not None
    assert cases.mode_callable(spec.fused, inputs, "fwd")().grad_fn is None
    assert cases.mode_callable(spec.fused, inputs, "fwd-grad")().grad_fn is not None


def test_event_dims_0_cases_are_element_wise():
    for spec in cases.OPS.values():
        if spec.event_dims != 0:
            continue
        torch.manual_seed(0)
        inputs = spec.make(4, 3, torch.float32, torch.device("cpu"))
        for fn in (spec.eager, spec.fused):
            outs = cases.as_tuple(fn(*inputs.args))
            assert all(o.shape == (4, 3) for o in outs), (spec.key, [o.shape for o in outs])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-quick")
    threads = torch.get_num_threads()
    rc = main(["--quick", "--device", "cpu", "--out", str(out), "-q"])
    assert torch.get_num_threads() == threads, "the runner must restore torch's thread count"
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
    for spec in cases.OPS.values():
        ed = "" if spec.event_dims is None else str(spec.event_dims)
        for prov in providers:
            for dtype in cases.DTYPES:
                for shape in sizes:
                    got = {r["mode"] for r in rows if (r["op"], r["event_dims"], r["provider"], r["dtype"],
                                                       r["shape"]) == (spec.name, ed, prov, dtype, shape)}
                    assert got == set(spec.modes), (spec.key, prov, dtype, shape, got)
    assert {m for r in rows for m in [r["mode"]] if r["op"] == "gaussian_kl"} == set(cases.MODES)
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
        assert r["threads"] == "1" and r["timer"].startswith("thread_time"), (r["threads"], r["timer"])
        if r["op"] not in report.STEP_OPS:
            assert int(r["bytes"]) > 0 and float(r["gbps"]) > 0 and float(r["pct_of_copy"]) > 0
    # the textbook reparameterization keeps eps (and std) alive for backward
    eager = [r for r in rows if (r["op"], r["provider"], r["mode"]) == ("reparameterize", "eager", "fwd-grad")]
    assert eager and all(int(r["saved_bytes"]) > 0 for r in eager)
    # under no_grad nothing is saved: the column stays empty
    assert all(r["saved_bytes"] == "" for r in rows if r["mode"] == "fwd")


def test_markdown_and_plots_written(quick_run):
    _, out, path, _ = quick_run
    md = path.with_suffix(".md").read_text(encoding="utf-8")
    for spec in cases.OPS.values():
        assert f"## {spec.name}" in md
    assert "## clip_weights" in md and "vae_step" in md and "| fwd-grad |" in md
    pngs = {p.name for p in out.glob("*.png")}
    for spec in cases.OPS.values():
        ed = "" if spec.event_dims is None else str(spec.event_dims)
        assert report.plot_name(path.stem, spec.name, ed) in pngs, spec.key
    assert f"{path.stem}-{report.CLIP_OP}.png" in pngs
    assert f"{path.stem}-gaussian_kl-event_dims0.png" in pngs


def test_csv_append_refuses_a_different_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("date,op\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="columns"):
        report.append_csv(path, [{"op": "clamp"}])


def test_a_csv_with_other_columns_is_refused_before_the_run(tmp_path):
    from bench import env

    (tmp_path / f"{env.device_slug(torch.device('cpu'))}.csv").write_text("date,op\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="columns"):
        main(["--quick", "--device", "cpu", "--out", str(tmp_path), "-q", "--ops", "clamp"])


def test_cpu_speed_quick(capsys):
    from bench import cpu_speed

    assert cpu_speed.main(["--quick"]) == 0
    text = capsys.readouterr().out
    assert "| reparameterize forward+backward |" in text
    assert "clip_weights_ 9-tensor DCGAN critic" in text


def test_small_sizes_quick(capsys, tmp_path):
    from bench import small_sizes

    threads = torch.get_num_threads()
    out = tmp_path / "small.md"
    assert small_sizes.main(["--quick", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads
    text = capsys.readouterr().out
    assert out.read_text(encoding="utf-8") in text
    for spec in small_sizes.differentiable_cases():
        for mode in ("full", "fwd"):
            assert f"| {spec.key} | {mode} |" in text
    assert "torch threads 1; timer thread_time" in text
    assert "torch.exp" in text and "event_dims=0" in text and "DCGAN critic 28x28" in text
    if "cpu" in cases.fastgen_backends(torch.device("cpu")):  # every ratio of section 1 measured
        section1 = text.split("### 1.")[1].split("### ")[0]
        assert "| - |" not in section1 and "-x" not in section1


def test_iwae_wgangp_quick(capsys):
    from bench import iwae_wgangp

    threads = torch.get_num_threads()
    assert iwae_wgangp.main(["--quick"]) == 0
    assert torch.get_num_threads() == threads
    text = capsys.readouterr().out
    for op in ("reparameterize_log_weights", "reparameterize_log_weights[K=5]", "grad_norm_penalty"):
        assert f"| {op} | full | 128x20 |" in text
    assert "| iwae K=5 |" in text and "| wgan_gp critic |" in text


@pytest.mark.slow
def test_quick_run_with_torch_compile(tmp_path):
    """The compile provider (tens of seconds of compilation on a cold cache)."""
    rc = main(["--quick", "--device", "cpu", "--out", str(tmp_path), "-q", "--providers", "eager,compile",
               "--ops", "reparameterize_kl,clamp", "--event-dims", "1", "--sizes", "128x20",
               "--dtypes", "float32", "--no-clip", "--no-steps", "--no-plots"])
    assert rc == 0
    rows = report.read_csv(next(tmp_path.glob("*.csv")))
    assert {r["provider"] for r in rows} == {"eager", "compile"}
    assert {r["mode"] for r in rows if r["op"] == "reparameterize_kl"} == set(cases.MODES)
    assert all(math.isfinite(float(r["median_ms"])) for r in rows)


def test_cpu_clock_is_thread_time_on_one_thread():
    from bench.timing import TimerConfig, cpu_clock

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cpu_clock(TimerConfig())[1] == "thread_time"
        assert cpu_clock(TimerConfig(clock="wall"))[1] == "perf_counter"
        torch.set_num_threads(2)
        if torch.get_num_threads() == 2:  # the workers' time would be missed: wall clock
            assert cpu_clock(TimerConfig())[1] == "perf_counter"
    finally:
        torch.set_num_threads(previous)
