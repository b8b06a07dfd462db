"""``attn-bench profile`` end to end on tiny models, and its one-line errors."""
from __future__ import annotations

import csv

import pytest

from attn_bench.cli import main

TINY = [
    "backbone=resnet18", "img_size=32", "timm_kwargs={channels:[16,32,64,128]}", "threads=1",
    "latency.warmup=1", "latency.warmup_s=0", "latency.repeats=3", "latency.min_repeats=1", "throughput.batch_size=2",
    "throughput.warmup=0", "throughput.warmup_s=0", "throughput.repeats=1",
]


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_profile_writes_csv_and_markdown_relative_to_none(tmp_path, capsys):
    assert main(["profile", *TINY, "blocks=[none,se]", f"out_dir={tmp_path}"]) == 0
    rows = read_csv(tmp_path / "profile.csv")
    assert [r["block"] for r in rows] == ["none", "se"]
    none, se = rows
    assert int(none["delta_params"]) == 0
    assert int(se["delta_params"]) == int(se["attn_params"]) > 0
    assert int(se["delta_macs"]) == int(se["macs"]) - int(none["macs"]) > 0
    assert se["uncounted_ops"] == ""
    markdown = (tmp_path / "profile.md").read_text()
    assert "| none" in markdown and "| se" in markdown and "Δ params (M)" in markdown
    assert (tmp_path / "profile.json").is_file()
    assert "Δ GMACs" in capsys.readouterr().out


def test_profile_without_baseline_shows_absolute_numbers_only(tmp_path):
    assert main(["profile", *TINY, "blocks=[se,eca]", f"out_dir={tmp_path}"]) == 0
    rows = read_csv(tmp_path / "profile.csv")
    assert [r["block"] for r in rows] == ["se", "eca"]
    assert not any(key.startswith("delta_") for key in rows[0])
    assert "Δ" not in (tmp_path / "profile.md").read_text()


def test_profile_rows_say_where_the_block_went(tmp_path):
    """placement=paper puts GC in stages 2-4: the row must say so, not read as 'gc' in every block."""
    assert main(["profile", *TINY, "blocks=[gc]", f"out_dir={tmp_path}"]) == 0
    assert "| gc (stages=[2, 3, 4])" in (tmp_path / "profile.md").read_text()
    assert read_csv(tmp_path / "profile.csv")[0]["label"] == "gc (stages=[2, 3, 4])"
    assert main(["profile", *TINY, "blocks=[gc]", "placement=uniform", f"out_dir={tmp_path}"]) == 0
    assert read_csv(tmp_path / "profile.csv")[0]["label"] == "gc"


def test_help_prints_the_keys_and_defaults(capsys):
    assert main(["profile", "--help"]) == 0
    assert "throughput:" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["blocks=[none,foo]"], "unknown attention block 'foo'; valid choices: none, se"),
    (["backbone=resnet50", "img_size=16", "stem=imagenet", "timm_kwargs=null"],
     "img_size=16 is too small for resnet50 with the imagenet stem"),
    (["img_size=4", "stem=small"], "img_size=4 is too small for resnet18 with the small stem"),
    (["backbone=vgg16"], "unknown backbone 'vgg16'; valid choices: resnet18"),
    (["no_such_key=1"], "Could not override 'no_such_key'"),
    (["latency.repeats=0"], "min_repeats <= repeats"),
    (["amp=fp8"], "unknown amp dtype 'fp8'"),
    (["blocks=[none,se,eca]", "attn_args={rd_ratio:0.5}"], "attention 'eca' has no argument(s) rd_ratio"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    assert main(["profile", *TINY, *args, f"out_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_two_models_of_one_backbone_never_share_an_output_folder(tmp_path, monkeypatch):
    """model=resnet18 and model=resnet18_tiny (timm's resnet18 with other widths) were both written to
    profile/resnet18_224px, the second overwriting the first's table."""
    from attn_bench.commands.profile import output_dir
    from attn_bench.config import compose

    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path))
    folders = {m: output_dir(compose("profile", [f"model={m}"])) for m in ("resnet18", "resnet18_tiny")}
    assert folders["resnet18"] == tmp_path / "profile" / "resnet18_224px"
    assert folders["resnet18_tiny"] == tmp_path / "profile" / "resnet18_channels_16_32_64_128_224px"
    assert output_dir(compose("profile", [f"out_dir={tmp_path / 'mine'}"])) == tmp_path / "mine"


def test_a_timing_difference_inside_the_passes_own_spread_is_shown_as_noise():
    """-75 % / +289 % from two overlapping spreads is noise, said as such; a real gap keeps its number."""
    from attn_bench.commands.profile import _delta, add_deltas

    def row(block, median, p10, p90):
        return {"block": block, "params": 1, "macs": 1, "flops": 1, "latency_ms": median, "latency_p10_ms": p10,
                "latency_p90_ms": p90, "throughput_img_per_s": 100.0, "throughput_p10_ms": 9.0,
                "throughput_p90_ms": 11.0}

    rows = add_deltas([row("none", 4.0, 1.0, 20.0), row("se", 1.0, 0.9, 5.0), row("gam", 40.0, 35.0, 45.0)])
    shown = {r["block"]: _delta("latency_ms", 1, 1)(r) for r in rows}
    assert shown["se"] == "within noise" and rows[1]["delta_latency_ms_pct"] == -75.0  # the CSV keeps the number
    assert shown["gam"] == "+36.0 (+900.0%)" and rows[2]["delta_latency_ms_within_noise"] is False
    assert all(r["delta_throughput_img_per_s_within_noise"] for r in rows)  # identical spreads
