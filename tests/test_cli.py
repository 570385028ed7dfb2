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
