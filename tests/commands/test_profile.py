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


def test_help_prints_the_keys_and_defaults_as_plain_text(capsys):
    assert main(["profile", "--help"]) == 0
    out = capsys.readouterr().out
    assert "throughput:" in out and "dataset: null" in out and "data=cifar100" in out
    assert ":func:" not in out and "``" not in out  # no Sphinx markup in a terminal


def test_the_head_has_the_classes_of_the_data_given(tmp_path):
    """The head profiled is the one training builds: CIFAR-100's 100 classes, an ImageFolder tree's class
    folders counted, ImageNet's 1000 without data= (the caption says which)."""
    from conftest import make_imagefolder

    def params(*args):
        out = tmp_path / "out"
        assert main(["profile", *TINY, "blocks=[none]", f"out_dir={out}", *args]) == 0
        return int(read_csv(out / "profile.csv")[0]["params"]), (out / "profile.md").read_text()

    imagenet, md = params()
    assert "1000 classes (ImageNet's" in md
    cifar10, md = params("data=cifar10")
    cifar100, md = params("dataset=cifar100")
    assert "100 classes (cifar100)" in md
    tree, _ = params(f"data={make_imagefolder(tmp_path / 'tree')}")
    width = 128 + 1  # the head of the TINY network: 128 features and a bias per class
    assert cifar100 - cifar10 == 90 * width and imagenet - cifar100 == 900 * width and cifar10 - tree == 8 * width


@pytest.mark.parametrize("args, message", [
    (["data=cifar100", "num_classes=10"], "data=cifar100 has num_classes=100; num_classes=10 contradicts it"),
    (["data=cifar10", "img_size=64"], "data=cifar10 has img_size=32; img_size=64 contradicts it"),
    (["data=imagefolder"], "data=imagefolder: give the tree's folder instead"),
    (["data=/no/such/tree"], "data=/no/such/tree: no such folder; give synthetic, cifar10, cifar100 or a folder"),
])
def test_data_that_cannot_be_profiled_is_one_line(tmp_path, capsys, args, message):
    tiny = [a for a in TINY if not a.startswith("img_size=")]
    assert main(["profile", *tiny, *args, f"out_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


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


def test_profiles_of_different_settings_never_share_an_output_folder(tmp_path, monkeypatch):
    """model=resnet18 and model=resnet18_tiny were both written to profile/resnet18_224px, the second
    overwriting the first's table; so were two stems, two data sets or two devices of one backbone."""
    from attn_bench.commands.profile import output_dir, resolve_data, with_aliases
    from attn_bench.config import compose

    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path))

    def folder(*overrides):
        cfg = compose("profile", with_aliases(list(overrides)))
        resolve_data(cfg)
        return output_dir(cfg)

    settings = [(), ("model=resnet18",), ("model=resnet18_tiny",), ("model.stem=small",), ("data=cifar100",),
                ("data=cifar100", "model.stem=small"), ("device=cuda",), ("attn_args={rd_ratio:0.5}",),
                ("placement=uniform",), ("latency.repeats=50",)]
    folders = [folder(*s) for s in settings]
    assert len(set(folders)) == len(settings)
    assert folder() == folders[0] and folder("img_size=224") == folders[0]  # the same profile: the same folder
    assert all(f.parent == tmp_path / "profile" for f in folders)
    assert folders[2].name.startswith("resnet18_channels_16_32_64_128_224px_")  # readable: what the model changes
    assert folders[4].name.startswith("resnet50_32px_")
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
