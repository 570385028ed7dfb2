"""Pre-tokenisation: token shards hold exactly what the frozen tokenizer and LAM say, and training
refuses tokens that another tokenizer made."""

import numpy as np
import pytest
import torch
from robo_genie.datasets.pretokenize import check_token_shards, pretokenize
from robo_genie.datasets.shards import FrameShards, ShardError

from robo_genie import bundle as bundle_io
from robo_genie.cli import main
from robo_genie.models.lam import infer_actions_windowed
from robo_genie.training.jobs import run_train_job
from tests.conftest import train_args
from tests.conftest import train_job as _job


@pytest.fixture
def run(micro_run):
    return micro_run


def test_token_shards_hold_the_frozen_parts_outputs(run, sim_shards, tmp_path):
    pretokenize(sim_shards, run / "bundle", tmp_path / "tok", device="cpu", progress=False)
    frames, tokens = FrameShards(sim_shards), FrameShards(tmp_path / "tok")
    assert tokens.kind == "tokens" and len(tokens.episodes) == len(frames.episodes)
    _, parts = bundle_io.load_bundle(run / "bundle", "cpu", ("tokenizer", "lam"))
    window = bundle_io.read_meta(run / "bundle")["parts"]["tokenizer"]["clip_len"]
    for e in (0, len(frames.episodes) - 1):
        video = torch.from_numpy(frames.read(e)).float() / 255
        got = torch.from_numpy(tokens.read(e, key="tokens").astype(np.int64))
        for t in (0, 1, len(video) - 1):       # frame t is encoded after the frames before it
            expected = parts["tokenizer"].encode(video[None, max(0, t - window + 1):t + 1])[0, -1]
            assert torch.equal(got[t], expected), (e, t)
        codes = tokens.read(e, key="latent_actions")
        assert codes[-1] == -1                 # no action after the last frame
        assert np.array_equal(codes[:-1], infer_actions_windowed(parts["lam"], video, 4).numpy())
        assert np.array_equal(tokens.read(e, key="labels"), frames.read(e, key="labels"))


def test_stage_all_pretokenises_once_and_dynamics_trains_on_tokens(run):
    meta = bundle_io.read_meta(run / "bundle")
    assert meta["parts"]["dynamics"]["data"] == str(run / "tokens")
    check_token_shards(run / "tokens", run / "bundle")          # made with this run's parts: accepted


def test_tokens_of_another_tokenizer_are_refused(run, sim_shards, tmp_path):
    other = tmp_path / "other"
    run_train_job(_job(other, sim_shards, "tokenizer", "seed=1"))
    run_train_job(_job(other, sim_shards, "lam"))
    with pytest.raises(ShardError, match="another tokenizer"):
        check_token_shards(run / "tokens", other / "bundle")
    with pytest.raises(SystemExit, match="another tokenizer"):
        main(["train", *train_args(other, run / "tokens", "dynamics", steps=2)])


def test_cli_pretokenises_and_names_what_is_missing(run, sim_shards, tmp_path):
    main(["ingest", "source=shards", f"path={sim_shards}", f"tokenize_with={run / 'bundle'}",
          f"out={tmp_path / 'tok'}", "progress=false"])
    assert FrameShards(tmp_path / "tok").kind == "tokens"
    with pytest.raises(SystemExit, match="tokenize_with=BUNDLE"):
        main(["ingest", "source=shards", f"path={sim_shards}", f"out={tmp_path / 'x'}"])
    with pytest.raises(SystemExit, match="trains on pixels"):
        main(["train", *train_args(tmp_path / "px", tmp_path / "tok", "tokenizer", steps=2)])
