"""The benchmark's markdown report: pooled table, ACE-G vs baselines, per-set rows."""

from __future__ import annotations

from aceg.evaluation import bench_report as report
from aceg.evaluation import benchmark as bm


def _run(method, dataset, kind, errors, mapping_s, query_s, size):
    return bm.MethodRun(method, dataset, kind, mapping_s, size, 1 << 20, errors,
                        {k: [query_s] * len(v) for k, v in errors.items()})


def test_report_compares_aceg_with_the_baselines_and_lists_real_sets():
    good, bad = (1.0, 0.05), (30.0, 2.0)  # (rot deg, trans m)
    runs = [
        _run("aceg", "s0", "synthetic", {"query_light": [good, good, bad, bad]}, 10.0, 0.05, 1000),
        _run("ace", "s0", "synthetic", {"query_light": [good, bad, bad, bad]}, 20.0, 0.10, 4000),
        _run("aceg", "castle", "real", {"query": [good, bad]}, 10.0, 0.05, 1000),
        _run("ace", "castle", "real", {"query": [bad, bad]}, 30.0, 0.05, 2000),
    ]
    text = report.markdown(report.summarise(runs), "aceg bench", "test machine", 60.0, runs)
    # ACE-G 50% vs ACE 25% within 10 cm / 10 deg; ACE maps 2x slower, queries 2x slower, 4x larger
    assert "| query_light | ACE head on XFeat | +25.0 | 2.00x | 2.00x | 4.00x |" in text
    assert "| query | ACE head on XFeat | +50.0 | 3.00x | 1.00x | 2.00x |" in text
    assert "### real data per set" in text
    assert "| castle | query | ACE-G | 2 | 50.0% |" in text
    assert "### synthetic data per set" not in text
    assert text.startswith(bm.MARK_START) and text.rstrip().endswith(bm.MARK_END)
