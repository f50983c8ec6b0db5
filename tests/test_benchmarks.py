"""The benchmark harness runs end to end (CPU smoke mode: tiny sizes, Triton interpreter)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from hipnnts_kernels import backends
from hipnnts_kernels.benchmarks import interaction, kernels, models
from hipnnts_kernels.benchmarks.costs import LEVELS, op_cost
from hipnnts_kernels.benchmarks.timing import time_call


@pytest.mark.skipif(backends.unavailable_reason("triton", torch.device("cpu")) is not None,
                    reason=str(backends.unavailable_reason("triton", torch.device("cpu"))))
def test_interaction_benchmark_smoke(tmp_path):
    interaction.main(["--smoke", "--lmax", "2", "--repeats", "1", "--warmup", "0", "--op-backends", "triton",
                      "reference", "--layer-backends", "triton", "reference", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "interaction_smoke.json").read_text())
    records = result["records"]
    assert len(records) == 12 and not [r for r in records if r["error"]]
    assert all(r["median_us"] > 0 for r in records)
    assert all(r["gbps"] > 0 and r["bytes"] > 0 for r in records if r["view"] == "op")
    assert result["meta"]["copy_gbps"] > 0 and result["meta"]["pairs"] > 0
    assert "## Op level" in (tmp_path / "interaction_smoke.md").read_text()


def test_interaction_bytes_grow_with_the_level():
    sizes = [op_cost("interaction", 10, 100, 4, 8, 2, 4).bytes(level) for level in LEVELS]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    # forward: Y, pair vectors, the receiver CSR index (int64) and the output
    assert sizes[0] == 10 * 4 * 8 * 4 + 100 * 3 * 4 + (2 * 100 + 11) * 8 + 10 * 8 * 4


def test_failures_are_recorded_not_raised():
    record = interaction._measure(interaction.Record("op", "x", 0, "forward"), lambda: 1 / 0,
                                 interaction.torch.device("cpu"), 0, 1, 1.0)
    assert record.error.startswith("ZeroDivisionError") and record.median_us is None
    assert time_call(lambda: None, interaction.torch.device("cpu"), warmup=0, repeats=3).median_us >= 0


# -- costs -------------------------------------------------------------------------------------
def test_costs_count_the_contraction_and_scale_by_level():
    n, p, nu, f = 10, 100, 4, 8
    envsum = op_cost("envsum", n, p, nu, f, 0, 4)
    assert envsum.forward_flops == 2 * p * nu * f
    assert [envsum.flops(level) for level in LEVELS] == [2 * p * nu * f * k for k in (1, 3, 7)]
    # forward: sens (P nu) and feat (N F) read, env (N nu F) written, two int64 index vectors
    assert envsum.bytes("forward") == (p * nu + n * f + n * nu * f) * 4 + 2 * p * 8
    assert op_cost("interaction", n, p, nu, f, 2, 4).forward_flops == 2 * p * f * (nu + 9)
    with pytest.raises(ValueError, match="unknown op"):
        op_cost("nope", n, p, nu, f, 0, 4)


# -- hipnnts bench kernels ---------------------------------------------------------------------
def test_kernel_benchmark_records_every_case(tmp_path):
    meta, records = kernels.run(["tiny"], ["envsum", "interaction"], ["reference", "cuda", "hippynn"], [2],
                                torch.float32, torch.device("cpu"), warmup=0, repeats=2, progress=False)
    ran = [r for r in records if r.median_us is not None]
    assert {(r.op, r.backend) for r in ran} == {("envsum", "reference"), ("interaction", "reference"),
                                               ("envsum", "hippynn")}
    assert all(r.level in LEVELS and r.bytes > 0 and r.flops > 0 and r.pct_roofline > 0 for r in ran)
    assert all(r.p10_us <= r.median_us <= r.p90_us for r in ran)
    skipped = {(r.op, r.backend) for r in records if r.skipped}
    assert ("envsum", "cuda") in skipped and ("interaction", "hippynn") in skipped
    assert not [r for r in records if r.error]
    assert meta["copy_gbps"] > 0 and meta["matmul_gflops"] > 0 and meta["presets"]["tiny"]["pairs_total"] > 0
    assert kernels.skip_reason("reference-compile", "envsum", torch.device("cpu"), "training")
    assert kernels.skip_reason("reference-compile", "envsum", torch.device("cpu"), "forward") is None
    text = kernels.markdown(meta, records)
    assert "## Preset `tiny`" in text and "| envsum |  | training |" in text and "Not applicable" in text


def test_kernel_benchmark_refuses_to_time_a_wrong_kernel(monkeypatch):
    real = kernels.backend_functions

    def wrong(backend, device):
        functions = real(backend, device)
        functions["envsum"] = lambda *t: 1.01 * kernels.reference.envsum(*t)
        return functions

    monkeypatch.setattr(kernels, "backend_functions", wrong)
    _, records = kernels.run(["tiny"], ["envsum", "sensesum"], ["reference"], [0], torch.float32,
                             torch.device("cpu"), warmup=0, repeats=1, progress=False)
    envsum = [r for r in records if r.op == "envsum"]
    assert len(envsum) == 3 and all("differs from the reference" in r.error and r.median_us is None for r in envsum)
    assert all(r.median_us is not None for r in records if r.op == "sensesum")


def test_kernel_level_closures_reach_the_double_backward():
    spec = kernels.PRESETS["tiny"]
    problem = kernels.make_problem(spec, torch.float64, torch.device("cpu"))
    (case,) = kernels.make_cases(problem, spec, [1], ["interaction"])
    functions = kernels.backend_functions("reference", torch.device("cpu"))
    grads = kernels.level_closures(case, functions)["training"]()
    # gradients with respect to Y, pair vectors, mu, sigma, vecscales and the output gradient
    assert len(grads) == len(case.differentiable) + 1 and all(g is not None for g in grads)


def test_bench_cli_writes_json_markdown_and_plots(tmp_path):
    from hipnnts_kernels.cli import main

    assert main(["bench", "kernels", "--preset", "tiny", "--op", "featsum", "--backend", "reference",
                 "--repeats", "1", "--warmup", "0", "--device", "cpu", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["kernels_tiny_cpu.json", "kernels_tiny_cpu.md", "kernels_tiny_cpu_speedup.png",
                     "kernels_tiny_cpu_time.png"]
    result = json.loads((tmp_path / "kernels_tiny_cpu.json").read_text())
    assert result["meta"]["git_commit"] and result["meta"]["torch"] and len(result["records"]) == 3
    assert result["meta"]["complete"] is True and "Partial" not in (tmp_path / "kernels_tiny_cpu.md").read_text()


def test_a_cut_run_keeps_what_it_measured(tmp_path, monkeypatch):
    """The report is rewritten after every backend: a run stopped in its second backend leaves the
    first backend's measurements, marked as partial."""
    from hipnnts_kernels.cli import main

    real, calls = kernels._measure_case, []

    def stopped_in_the_second_backend(case, fns, expected, base, *args):
        calls.append(base["backend"])
        if base["backend"] == "hippynn":
            raise KeyboardInterrupt
        return real(case, fns, expected, base, *args)

    monkeypatch.setattr(kernels, "_measure_case", stopped_in_the_second_backend)
    assert main(["bench", "kernels", "--preset", "tiny", "--op", "featsum", "--backend", "reference", "hippynn",
                 "--repeats", "1", "--warmup", "0", "--device", "cpu", "--out", str(tmp_path)]) == 130
    assert calls == ["reference", "hippynn"]
    result = json.loads((tmp_path / "kernels_tiny_cpu.json").read_text())
    assert result["meta"]["complete"] is False
    assert {r["backend"] for r in result["records"]} == {"reference"} and len(result["records"]) == 3
    assert "**Partial results**" in (tmp_path / "kernels_tiny_cpu.md").read_text()
    assert not list(tmp_path.glob("*.png"))  # plots only for a finished run


# -- hipnnts bench models ----------------------------------------------------------------------
def test_model_benchmark_compares_identical_weights_and_states_the_rules(tmp_path):
    peers = ["hippynn", "etn"] + (["tensornet"] if importlib.util.find_spec("torchmdnet") else [])
    saved = []
    results = models.run(["one"], [2], ["reference"], peers, torch.float32, torch.device("cpu"), warmup=0,
                         repeats=2, tensornet_variants=((1, 4.5),), etn_variants=((2, 4, 4, 4, 5.0),),
                         on_progress=lambda r: saved.append(len(r.records)))
    names = {r.contender for r in results.records}
    assert saved == [2 * k for k in range(1, len(names) + 1)]  # after every contender, its two tasks
    assert {"HIP-NN-TS l=2 [reference]", "ETN D=2, b=4, M=4"} < names and any("hippynn" in n for n in names)
    assert max(results.parity["HIP-NN-TS l=2 [reference]"].values()) < 1e-4
    assert not [r for r in results.records if r.error]
    assert all(r.us_per_atom > 0 and r.molecules_per_s > 0 and r.atoms == results.meta["sizes"]["one"]["atoms"]
               for r in results.records)
    text = models.markdown(results)
    for rule in ("TF32 off", "Neighbour list **inside**", "no CUDA graphs and no torch.compile", "Warm-up excluded",
                 "Peak memory", "Versions:", "from this one run"):
        assert rule in text
    assert "HIP-NN-TS l=2 [hippynn" in text and "×" in text
    paths = models.plots(results, tmp_path, "models_test")
    assert all(p.stat().st_size > 0 for p in paths)


def test_model_benchmark_does_not_time_a_model_that_disagrees_with_hippynn(monkeypatch):
    real = models.our_contenders

    def perturbed(*args, **kwargs):
        contenders = real(*args, **kwargs)
        with torch.no_grad():
            contenders[0].module.energy_heads[1].weight.mul_(1.5)  # ours only; hippynn keeps the weights
        return contenders

    monkeypatch.setattr(models, "our_contenders", perturbed)
    results = models.run(["one"], [0], ["reference"], ["hippynn"], torch.float32, torch.device("cpu"), warmup=0,
                         repeats=1)
    ours = [r for r in results.records if r.family == "ours"]
    assert ours and all("differs from hippynn" in r.error for r in ours)


# -- hipnnts bench traffic ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_traffic_report(tmp_path_factory):
    """The folder of one `hipnnts bench traffic --preset tiny` run (about 12 s emulated), shared."""
    from hipnnts_kernels.cli import main

    out = tmp_path_factory.mktemp("traffic")
    assert main(["bench", "traffic", "--preset", "tiny", "--out", str(out)]) == 0
    return out


def test_traffic_model_covers_every_launch_and_is_labelled_a_model(tiny_traffic_report):
    result = json.loads((tiny_traffic_report / "traffic_model.json").read_text())
    rows = result["rows"]
    kernels_seen = {(r["path"], r["passname"], r["kernel"].split()[0]) for r in rows if r["kernel"] != "total"}
    assert {("per-atom", "forward", "sender_contract"), ("per-atom", "forward", "receiver_forward"),
            ("per-atom", "backward", "receiver_backward"), ("per-atom", "backward", "sender_backward"),
            ("per-atom", "double", "sender_contract_double"), ("per-atom", "double", "receiver_double_backward"),
            ("per-atom", "double", "sender_double_backward"),
            ("molecule", "forward", "featsum_molecules"), ("molecule", "forward", "molecule_forward"),
            ("molecule", "backward", "molecule_backward"), ("molecule", "double", "molecule_double_backward"),
            ("molecule", "double", "tile_sum")} <= kernels_seen
    for r in rows:
        assert r["dram_lower_bound"] <= r["l2_bytes"] and r["flops"] > 0
        if r["kernel"] == "total":  # every input read once and every output written once, at least
            assert r["dram_lower_bound"] >= 0.9 * r["minimum_bytes"], r
        else:
            assert 1 <= r["sectors_per_load_request"] <= 32
    assert result["meta"]["report_kind"].startswith("MODEL")
    assert "**A model, not a measurement**" in (tiny_traffic_report / "traffic_model.md").read_text()


def test_traffic_model_compares_with_an_earlier_report(tiny_traffic_report, tmp_path, capsys):
    from hipnnts_kernels.cli import main

    before = tiny_traffic_report / "traffic_model.json"
    assert main(["bench", "traffic", "--preset", "tiny", "--out", str(tmp_path / "after"), "--compare",
                 str(before)]) == 0
    text = (tmp_path / "after" / "traffic_model.md").read_text()
    section = text[text.index("## Before and after"):]
    assert "| tiny | interaction | double | per-atom |" in section and " → " in section
    capsys.readouterr()
    (tmp_path / "bad.json").write_text('{"rows": 3}')
    assert main(["bench", "traffic", "--preset", "tiny", "--out", str(tmp_path / "x"), "--compare",
                 str(tmp_path / "bad.json")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "bad.json" in error and "expected the JSON of an earlier" in error
    assert not (tmp_path / "x").exists()


# -- hipnnts bench profile ---------------------------------------------------------------------
def test_profile_reports_the_custom_ops_per_step(tmp_path, capsys):
    from hipnnts_kernels.cli import main

    assert main(["bench", "profile", "--size", "one", "--lmax", "2", "--task", "training", "--warmup", "0",
                 "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "profile_cpu.json").read_text())
    (p,) = result["profiles"]
    assert p["task"] == "training" and p["lmax"] == 2 and p["step_ms"] > 0
    # a training step runs the forward, the backward and (for the forces' gradient) the double backward
    assert {"hipnnts::interaction", "hipnnts::interaction_backward",
            "hipnnts::interaction_double_backward"} <= set(p["ops"])
    assert p["top_self"] and all(e["op"].startswith("aten::") for e in p["top_self"])
    assert "| `hipnnts::interaction_double_backward` |" in (tmp_path / "profile_cpu.md").read_text()
    capsys.readouterr()
    assert main(["bench", "profile", "--repeats", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--repeats" in capsys.readouterr().err and not (tmp_path / "x").exists()


# -- hipnnts bench headroom --------------------------------------------------------------------
def test_headroom_times_ours_free_kernels_and_hippynn_and_leaves_no_backend_behind(tmp_path):
    from hipnnts_kernels.benchmarks import headroom
    from hipnnts_kernels.cli import main

    assert main(["bench", "headroom", "--size", "one", "--lmax", "0", "--backend", "reference", "--warmup", "0",
                 "--repeats", "2", "--out", str(tmp_path)]) == 0
    records = json.loads((tmp_path / "headroom_cpu.json").read_text())["records"]
    assert [(r["family"], r["task"]) for r in records] == [(f, t) for t in models.TASKS
                                                           for f in ("ours", "free", "hippynn")]
    assert all(r["median_ms"] > 0 and not r["error"] for r in records)
    assert "| 0 | one | training |" in (tmp_path / "headroom_cpu.md").read_text()
    assert headroom.ZEROS not in backends.known_backends()
    failed = [models.Record(f"x [{f}]", f, 0, "one", "training", 19, 1, median_ms=1.0,
                            error="RuntimeError: boom" if f == "free" else None) for f in ("ours", "free", "hippynn")]
    (row,) = [line for line in headroom.markdown(dict(environment={}, warmup=0, repeats=1), failed).splitlines()
              if line.startswith("| 0 |")]
    assert "x [free]: RuntimeError: boom" in row and row.count("|") == 10  # the table's 9 columns


def test_free_kernels_write_zeros_of_every_level_shape():
    from hipnnts_kernels import ops
    from hipnnts_kernels.benchmarks import headroom

    Y = torch.randn(3, 2, 4, requires_grad=True)
    coord = torch.randn(4, 3, requires_grad=True)
    first, second = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 0, 1, 2])
    mu, sigma = torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([0.5, 0.5], requires_grad=True)
    with headroom.zero_kernels() as name:
        out = ops.interaction(Y, coord, first, second, mu, sigma, cutoff=5.0, lmax=0, backend=name)
        grads = torch.autograd.grad(out.sum(), (Y, coord), create_graph=True)
        second_order = torch.autograd.grad(grads[1].sum() + out.sum(), (Y, coord, mu, sigma), allow_unused=True)
    assert out.shape == (3, 4) and not out.any()
    assert [g.shape for g in grads] == [Y.shape, coord.shape] and not any(g.any() for g in grads)
    assert [g.shape for g in second_order] == [Y.shape, coord.shape, mu.shape, sigma.shape]
    with pytest.raises(ValueError, match="backend must be"):
        ops.interaction(Y, coord, first, second, mu, sigma, cutoff=5.0, lmax=0, backend=headroom.ZEROS)
