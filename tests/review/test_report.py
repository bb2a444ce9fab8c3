"""`autoresearch report` through the real CLI: the real 126-row night, hand-edited and empty TSVs,
the plot and HTML files, kept-commit diffs from a real git branch, and the pandas API."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support.review_repos import Step, night, seed

from harness.commands.main import main
from harness.review.api import load_results, load_summary

HERE = Path(__file__).resolve().parents[1]
FIXTURE = HERE / "fixtures" / "karpathy_mar8_results.tsv"


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_real_night_json_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = report(capsys, "--tsv", str(FIXTURE), "--json")
    assert code == 0, err
    summary = json.loads(out)  # stdout holds only the JSON
    assert summary["experiments"] == 126
    assert summary["kept"] == 23
    assert summary["discarded"] == 102
    assert summary["crashed"] == 1
    assert summary["baseline"] == 0.9979
    assert summary["best"] == 0.969686
    assert summary["improvement_pct"] == pytest.approx((0.9979 - 0.969686) / 0.9979 * 100)
    assert summary["direction"] == "minimize"
    assert summary["best_commit"] == "438a26e"
    assert summary["keep_rate"] == pytest.approx(22 / 125)
    # Kept improvements in order, each moving the running best down.
    steps = summary["improvements"]
    assert len(steps) == 22 and steps[0]["commit"] == "bea057b"
    assert steps[0]["delta"] == pytest.approx(0.986041 - 0.9979)
    assert summary["biggest_hits"][0]["description"].startswith("halve batch")
    assert list(summary["crashes"]) == ["no reason recorded"]
    assert (summary["attempts"], summary["kept_attempts"]) == (125, 22)
    assert summary["gpu_hours"] is None and summary["llm_cost_usd"] is None  # not recorded in that TSV
    assert summary["run_hours"] is None and summary["hardware"] == []
    assert summary["skipped_lines"] == []


def test_real_night_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = report(capsys, "--tsv", str(FIXTURE), "--out", str(tmp_path))
    assert code == 0, err
    # The baseline is counted apart, the same way in every number of the line.
    assert "baseline + 125 attempts | kept 22 | discarded 102 | crashed 1 | keep rate 17.6%" in out
    assert "Kept improvements" in out and "Biggest hits" in out and "Crashes by reason" in out
    png = (tmp_path / "progress.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    page = (tmp_path / "report.html").read_text()
    assert 'src="data:image/png;base64,' in page
    assert "halve batch 524K to 262K" in page and "0.969686" in page
    # Self-contained: nothing is fetched from anywhere.
    for needle in ('src="http', "src='http", 'href="http', "<script", "<link", "@import"):
        assert needle not in page
    assert "diffs unavailable" in page  # the fixture's commits are not in this repository
    assert json.loads((tmp_path / "summary.json").read_text())["kept"] == 23


def test_hand_edited_tsv_skips_bad_lines_and_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tsv = tmp_path / "hand.tsv"
    tsv.write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        "aaaaaaa\t1.000000\t10.0\tkeep\tbaseline\n"
        "bbbbbbb\toops\t10.0\tdiscard\tmetric is not a number\n"
        "ccccccc\t0.990000\t10.0\tkeep\t<script>alert('x')</script> & friends\n"
        "ddddddd\t0.995000\n"
        "eeeeeee\t0.980000\t10.0\tmaybe\tunknown status\n"
        "\n"
        "fffffff\t0.000000\t0.0\tcrash\tOOM at depth 12\n"
        "1234567\t0.985000\t\tkeep\tblank memory\n"
    )
    code, out, err = report(capsys, "--tsv", str(tsv), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["experiments"], summary["kept"], summary["crashed"]) == (4, 3, 1)
    assert summary["best"] == 0.985 and summary["baseline"] == 1.0
    assert [s["line"] for s in summary["skipped_lines"]] == [3, 5, 6]
    for line in (3, 5, 6):
        assert f"skipped line {line}" in err

    code, out, err = report(capsys, "--tsv", str(tsv), "--out", str(tmp_path / "out"))
    assert code == 0, err
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; friends" in page
    assert "Skipped lines" in page


def test_dollar_signs_in_descriptions_are_text_not_mathtext(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Unparseable mathtext in a kept row's label used to raise inside matplotlib and lose the report.
    tsv = tmp_path / "money.tsv"
    tsv.write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        "aaaaaaa\t1.000000\t10.0\tkeep\tbaseline\n"
        "bbbbbbb\t0.990000\t10.0\tkeep\tscale lr by $\\frac{a$ (saves $5 of $10)\n"
    )
    code, out, err = report(capsys, "--tsv", str(tsv), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out" / "progress.png").read_bytes().startswith(b"\x89PNG")
    assert "scale lr by $\\frac{a$" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.parametrize("content", ["", "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"])
def test_empty_tsv_is_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    tsv = tmp_path / "empty.tsv"
    tsv.write_text(content)
    code, out, err = report(capsys, "--tsv", str(tsv), "--json")
    assert code == 2 and out == ""
    assert "nothing to report" in err and "no experiment rows" in err and "Traceback" not in err


def test_missing_columns_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tsv = tmp_path / "narrow.tsv"
    tsv.write_text("commit\tval_bpb\naaaaaaa\t1.0\nbbbbbbb\t0.9\n")
    code, out, err = report(capsys, "--tsv", str(tsv))
    assert code == 2 and out == ""
    assert "skipped line 2" in err and "skipped line 3" in err and "none of its 2 data lines" in err

    code, out, err = report(capsys, "--tsv", str(tmp_path / "nope.tsv"))
    assert code == 2 and "no results file" in err


def test_maximize_metric_gpu_hours_cost_and_crash_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tsv = tmp_path / "kernel.tsv"
    rows = [
        ("0a0a0a0", "1000.0", "keep", "baseline", "310.0", "0.0", "", "H100"),
        ("1b1b1b1", "1200.0", "keep", "tile 128", "305.0", "0.25", "", "H100"),
        ("2c2c2c2", "900.0", "discard", "tile 256", "300.0", "0.25", "", "H100"),
        ("3d3d3d3", "0.0", "crash", "unroll 8", "12.0", "0.5", "compile error", "H100"),
        ("4e4e4e4", "0.0", "crash", "unroll 16", "11.0", "0.5", "compile error", "H100"),
        ("5f5f5f5", "0.0", "crash", "huge smem", "", "", "timeout", "H100"),
        ("6a6a6a6", "1500.0", "keep", "async copy", "302.0", "0.5", "", "H100"),
    ]
    tsv.write_text(
        "commit\ttokens_per_s\tmemory_gb\tstatus\tdescription\twall_s\tcost_usd\treason\tworker\tdevice\n"
        + "".join(
            f"{c}\t{m}\t1.0\t{s}\t{d}\t{w}\t{cost}\t{r}\t{hw}\tcuda\n" for c, m, s, d, w, cost, r, hw in rows
        )
    )
    code, out, err = report(capsys, "--tsv", str(tsv), "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["metric"] == "tokens_per_s" and s["direction"] == "maximize"
    assert (s["baseline"], s["best"], s["best_commit"]) == (1000.0, 1500.0, "6a6a6a6")
    assert s["improvement_pct"] == pytest.approx(50.0)
    assert s["gpu_hours"] == pytest.approx((310 + 305 + 300 + 12 + 11 + 302) / 3600) == s["run_hours"]
    assert s["llm_cost_usd"] == pytest.approx(2.0)
    assert s["workers"] == ["H100"]
    assert {k: len(v) for k, v in s["crashes"].items()} == {"compile error": 2, "timeout": 1}
    assert [h["commit"] for h in s["biggest_hits"]] == ["6a6a6a6", "1b1b1b1"]  # +25 % beats +20 %

    # The plot is direction-aware and still renders with crashes and off-scale points.
    code, _, err = report(capsys, "--tsv", str(tsv), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out" / "progress.png").stat().st_size > 10_000


def test_report_by_tag_in_repo_includes_kept_diffs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = seed(tmp_path / "repo")
    kept = night(
        repo,
        "t1",
        [
            Step("lower the learning rate", "LEARNING_RATE = 0.01", "LEARNING_RATE = 0.005", "keep", 0.9),
            Step("bigger batch", "", "", "discard", 0.95),
            Step("deeper <net>", "DEPTH = 4", "DEPTH = 6", "keep", 0.8),
        ],
    )
    (repo / "experiments" / "toy").mkdir(exist_ok=True)
    monkeypatch.chdir(repo / "experiments" / "toy")  # anywhere inside the repo works
    code, out, err = report(capsys, "--tag", "t1")
    assert code == 0, err
    page = (repo / "results" / "t1" / "report.html").read_text()
    assert f"id='diff-{kept[0]}'" in page and f"id='diff-{kept[1]}'" in page
    assert "-LEARNING_RATE = 0.01" in page and "+LEARNING_RATE = 0.005" in page
    assert "+DEPTH = 6" in page and "deeper &lt;net&gt;" in page
    assert (repo / "results" / "t1" / "progress.png").is_file()

    # Without --tag the newest results/<tag>.tsv is reported.
    code, out, err = report(capsys, "--json")
    assert code == 0 and json.loads(out)["best"] == 0.8


def test_pandas_api(tmp_path: Path) -> None:
    df = load_results(FIXTURE)
    assert len(df) == 126
    assert list(df.columns[:6]) == ["n", "commit", "val_bpb", "memory_gb", "status", "description"]
    assert int(df["kept"].sum()) == 23
    assert df["running_best"].iloc[-1] == 0.969686 and df["running_best"].iloc[0] == 0.9979
    assert df["running_best"].is_monotonic_decreasing
    assert df.attrs["metric"] == "val_bpb" and df.attrs["direction"] == "minimize"
    assert load_summary(FIXTURE).kept == 23

    tsv = tmp_path / "results" / "x.tsv"
    tsv.parent.mkdir()
    tsv.write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\twall_s\tagent\naaaaaaa\t1.0\t1.0\tkeep\tbaseline\t300.5\tsearch\n"
    )
    df = load_results("x", root=tmp_path)
    assert df["wall_s"].dtype.kind == "f" and df["agent"].iloc[0] == "search"
    assert math.isclose(df["wall_s"].iloc[0], 300.5)


def test_steps_and_tokens_per_second_are_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The per-run columns (one value per run) are averaged: a kept change that trained fewer
    steps in the same budget shows it next to its gain."""
    header = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\tn\truns\ttraining_s\tnum_steps\ttokens_per_s"
    tsv = tmp_path / "pace.tsv"
    tsv.write_text(
        header + "\n"
        "aaaaaaa\t1.000000\t40.0\tkeep\tbaseline\t0\t1.0,1.0\t300.1,300.3\t801,799\t1660000,1650000\n"
        "bbbbbbb\t0.990000\t40.0\tkeep\twider model\t1\t0.99\t300.2\t700\t1450000\n"
    )
    code, out, err = report(capsys, "--tsv", str(tsv))
    assert code == 0, err
    assert "baseline pace: 800 steps, 1.66M tok/s" in out
    assert "wider model  [700 steps, 1.45M tok/s]" in out
    code, out, _ = report(capsys, "--tsv", str(tsv), "--json")
    data = json.loads(out)
    assert data["baseline_steps"] == 800 and data["improvements"][0]["num_steps"] == 700


def test_plot_labels_overlap_nothing_and_stay_in_the_frame() -> None:
    """The real night's plot: x from 0, a baseline line, and labels that overlap neither each
    other, the legend nor the title, all inside the axes."""
    import matplotlib.pyplot as plt

    from harness.review.plot import figure
    from harness.review.summary import load

    summary, rows = load(FIXTURE)
    fig = figure(rows, summary)
    try:
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        labels = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(labels) >= 10  # most kept steps are named
        frame = ax.get_window_extent(renderer)
        title = ax.title.get_window_extent(renderer)
        legend = ax.get_legend().get_window_extent(renderer)
        for k, box in enumerate(labels):
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            assert not box.overlaps(title) and not box.overlaps(legend)
            assert not any(box.overlaps(other) for other in labels[k + 1 :])
        lo, hi = ax.get_xlim()
        assert lo == -0.5 and min(x for x in ax.get_xticks() if lo <= x <= hi) == 0  # no experiment -1
        assert "baseline" in [h.get_label() for h in ax.get_legend().legend_handles]
        assert fig.get_window_extent(renderer).contains(title.x0, title.y0)
    finally:
        plt.close(fig)


def test_a_night_whose_baseline_crashed_reports_no_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tsv = tmp_path / "crashed.tsv"
    tsv.write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\twall_s\tdevice\thardware\n"
        "aaaaaaa\t0.000000\t0.0\tcrash\tbaseline\t30.0\tcpu\tAMD EPYC (2 cores) | torch 2.13.0+cpu\n"
    )
    code, out, err = report(capsys, "--tsv", str(tsv), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert "None" not in out and "no run produced a metric yet" in out
    assert "GPU hours" not in out and "run hours 0.01 on cpu" in out and "AMD EPYC (2 cores)" in out


def test_headerless_harness_tsv_reads_its_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A harness TSV that lost its header line is read by position, not glued into descriptions."""
    from harness.store.ledger import EXTRA_COLUMNS

    extra = dict.fromkeys(EXTRA_COLUMNS, "")
    line = "\t".join(
        [
            "aaaaaaa",
            "1.000000",
            "1.0",
            "keep",
            "baseline",
            *{**extra, "wall_s": "3600", "device": "cuda", "hardware": "1x H100 | torch 2.9"}.values(),
        ]
    )
    tsv = tmp_path / "headless.tsv"
    tsv.write_text(line + "\n")
    code, out, err = report(capsys, "--tsv", str(tsv), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["best_description"] == "baseline" and summary["gpu_hours"] == 1.0
    assert summary["hardware"] == ["1x H100 | torch 2.9"]
    assert "no header line" in err


def test_report_json_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    import subprocess
    import sys

    big = tmp_path / "big.tsv"  # a summary JSON far larger than a pipe's buffer
    big.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n" + "".join(
        f"{k:07x}\t{1.0 - k * 1e-5:.6f}\t1.0\tkeep\t{'baseline' if k == 0 else f'step {k} ' + 'x' * 60}\n"
        for k in range(5000)
    ))  # fmt: skip
    out = subprocess.run(
        f"{sys.executable} -m harness report --tsv {big} --json | head -1",
        shell=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.stdout == "{\n" and out.returncode == 0
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
