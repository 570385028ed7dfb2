import pytest

from robo_genie.cli import main


@pytest.mark.parametrize("args,expected", [
    (["train", "data.path=x", "out=y", "stepz=3"], "stepz"),                 # misspelt key
    (["train", "data.path=x", "out=y", "steps=many"], "steps"),             # wrong type
    (["train", "data.path=x", "out=y", "model=huge"], "huge"),              # unknown size
    (["train", "data.path=x"], "out=..."),                                  # missing required
    (["frobnicate"], "unknown command"),
    (["eval", "vibes", "bundle=b", "data.path=d", "out=o"], "unknown evaluation"),
])
def test_bad_settings_fail_at_once_with_a_clear_message(args, expected):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert expected in str(e.value.code)


def test_help_prints_the_config(capsys):
    main(["train", "--help"])
    out = capsys.readouterr().out
    assert "stage: all" in out and "codebook_size: 2048" in out


def test_play_rejects_actions_outside_the_model(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["play", "bundle=b", "prompt=p.png", "actions=0,x"])
    assert "actions" in str(e.value.code)


@pytest.mark.parametrize("case", ["no_gpu", "bad_device", "wrong_path", "too_few_frames", "not_a_bundle",
                                  "old_bundle", "no_prompt"])
def test_newcomers_errors_are_one_line_with_what_to_do(case, sim_shards, micro_run, tmp_path):
    """The errors a new lab hits first end in one line that says what to do, never a traceback."""
    import json
    import shutil

    import torch
    train = ["train", "stage=tokenizer", f"out={tmp_path / 'run'}", "steps=1"]
    old = tmp_path / "old_bundle"
    if case == "old_bundle":
        shutil.copytree(micro_run / "bundle", old)
        meta = json.loads((old / "meta.json").read_text())
        (old / "meta.json").write_text(json.dumps({**meta, "format": "robo_genie.bundle/0"}))
    args, expected = {
        "no_gpu": (train + [f"data.path={sim_shards}", "device=cuda"], "use device=auto or device=cpu"),
        "bad_device": (train + [f"data.path={sim_shards}", "device=gpu"], "use auto, cpu, cuda"),
        "wrong_path": (train + [f"data.path={tmp_path / 'nowhere'}"], "robo-genie ingest"),
        "too_few_frames": (train + [f"data.path={sim_shards}", "tokenizer.clip_len=40"], "lower the clip length"),
        "not_a_bundle": (["play", f"bundle={tmp_path}", "prompt=p.png"], "is not a world-model bundle"),
        "old_bundle": (["info", f"bundle={old}"], "unknown format"),
        "no_prompt": (["play", f"bundle={micro_run / 'bundle'}"], "or ui=true"),
    }[case]
    if case == "no_gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as e:
        main(args)
    message = str(e.value.code)
    assert expected in message and "\n" not in message and "Traceback" not in message
