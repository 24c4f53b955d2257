"""Model souping on small fake sentence-transformers checkpoint directories."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gemma_embed.errors import CheckpointError, InputError
from gemma_embed.train.orchestration import soup
from gemma_embed.train.orchestration.soup import soup_checkpoints

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"},
]


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def make_checkpoint(
    root: Path, seed: int, *, sharded: bool = False, config: dict | None = None, edit=None
) -> Path:
    """A tiny checkpoint; `edit(model_tensors)` may change the main model's tensors before saving."""
    g = torch.Generator().manual_seed(seed)
    model = {
        "embed_tokens.weight": torch.randn(10, 8, generator=g).bfloat16(),
        "layers.0.mlp.down_proj.weight": torch.randn(8, 8, generator=g).bfloat16(),
        "norm.weight": torch.randn(8, generator=g),
        "position_ids": torch.arange(6),
    }
    if edit is not None:
        edit(model)
    cfg = {
        "model_type": "gemma3_text",
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "transformers_version": f"4.{seed}",
    }
    _write_json(root / "config.json", {**cfg, **(config or {})})
    _write_json(root / "modules.json", MODULES)
    _write_json(
        root / "1_Pooling/config.json", {"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True}
    )
    for name, (n_in, n_out) in {"2_Dense": (8, 12), "3_Dense": (12, 8)}.items():
        _write_json(root / name / "config.json", {"in_features": n_in, "out_features": n_out, "bias": False})
        save_file({"linear.weight": torch.randn(n_out, n_in, generator=g)}, root / name / "model.safetensors")
    (root / "tokenizer.json").write_text(f"tokenizer of checkpoint {seed}")
    _write_json(root / "config_sentence_transformers.json", {"similarity_fn_name": "cosine"})
    if not sharded:
        save_file(model, root / "model.safetensors", metadata={"format": "pt"})
        return root
    names = sorted(model)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    for shard, keys in shards.items():
        save_file({k: model[k] for k in keys}, root / shard, metadata={"format": "pt"})
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    _write_json(root / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    return root


def _all_tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    """Tensors by "<module dir>/<name>", shards merged into one "model" component."""
    out = {}
    for f in sorted(ckpt.rglob("*.safetensors")):
        prefix = f.parent.relative_to(ckpt).as_posix()
        out.update({f"{prefix}/{k}": v for k, v in load_file(f).items()})
    return out


def _expected(ckpts: list[Path], weights: list[float]) -> dict[str, torch.Tensor]:
    loaded = [_all_tensors(c) for c in ckpts]
    expected = {}
    for key, first in loaded[0].items():
        if first.is_floating_point():
            expected[key] = sum(w * t[key].float() for w, t in zip(weights, loaded, strict=True)).to(
                first.dtype
            )
        else:
            expected[key] = first
    return expected


def _assert_tensors_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        torch.testing.assert_close(actual[key], tensor, rtol=0, atol=0, msg=key)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_uniform_soup_averages_every_tensor_file_and_copies_the_rest(tmp_path):
    ckpts = [make_checkpoint(tmp_path / f"ckpt{i}", seed=i) for i in range(3)]
    out = soup_checkpoints(ckpts, tmp_path / "soup")
    assert out == tmp_path / "soup"
    _assert_tensors_equal(_all_tensors(out), _expected(ckpts, [1 / 3] * 3))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(ckpts[0]).as_posix() for p in ckpts[0].rglob("*") if p.is_file())
    for name in ("tokenizer.json", "config.json", "modules.json", "2_Dense/config.json"):
        assert (out / name).read_bytes() == (ckpts[0] / name).read_bytes()
    assert _leftovers(tmp_path) == []


def test_weights_are_normalised(tmp_path):
    ckpts = [make_checkpoint(tmp_path / f"ckpt{i}", seed=i) for i in range(2)]
    soup_checkpoints(ckpts, tmp_path / "a", weights=[1.0, 3.0])
    soup_checkpoints(ckpts, tmp_path / "b", weights=[2.0, 6.0])
    _assert_tensors_equal(_all_tensors(tmp_path / "a"), _expected(ckpts, [0.25, 0.75]))
    _assert_tensors_equal(_all_tensors(tmp_path / "a"), _all_tensors(tmp_path / "b"))
    soup_checkpoints(ckpts, tmp_path / "c", weights=[0.0, 1.0])
    _assert_tensors_equal(_all_tensors(tmp_path / "c"), _all_tensors(ckpts[1]))


def test_sharded_checkpoint_soups_with_a_single_file_one(tmp_path):
    sharded = make_checkpoint(tmp_path / "sharded", seed=0, sharded=True)
    single = make_checkpoint(tmp_path / "single", seed=1)
    out = soup_checkpoints([sharded, single], tmp_path / "soup")
    assert sorted(p.name for p in out.glob("model*")) == sorted(p.name for p in sharded.glob("model*"))
    _assert_tensors_equal(_all_tensors(out), _expected([sharded, single], [0.5, 0.5]))


def _drop(key):
    return lambda model: model.pop(key)


def _set(key, value):
    return lambda model: model.__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "config", "match"),
    [
        (_drop("norm.weight"), None, r"lacks tensor 'norm.weight' of model.safetensors"),
        (_set("extra.bias", torch.zeros(2)), None, r"lacks tensor 'extra.bias'"),
        (_set("norm.weight", torch.zeros(9)), None, r"'norm.weight' of model.safetensors has shape \[8\]"),
        (_set("norm.weight", torch.zeros(8, dtype=torch.bfloat16)), None, r"'norm.weight' .* is F32 .* BF16"),
        (_set("position_ids", torch.arange(1, 7)), None, r"integer tensor 'position_ids' .* differs"),
        (None, {"num_hidden_layers": 2}, r"config.json field 'num_hidden_layers' differs: 1 .* vs 2"),
    ],
    ids=["missing", "extra", "shape", "dtype", "integer", "config"],
)
def test_incompatible_checkpoints_are_refused_before_writing(tmp_path, edit, config, match):
    a = make_checkpoint(tmp_path / "a", seed=0)
    b = make_checkpoint(tmp_path / "b", seed=1, edit=edit, config=config)
    with pytest.raises(CheckpointError, match=match):
        soup_checkpoints([a, b], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()
    assert _leftovers(tmp_path) == []


def test_module_config_and_pickle_files_are_refused(tmp_path):
    a = make_checkpoint(tmp_path / "a", seed=0)
    b = make_checkpoint(tmp_path / "b", seed=1)
    _write_json(b / "3_Dense/config.json", {"in_features": 12, "out_features": 8, "bias": True})
    with pytest.raises(CheckpointError, match=r"3_Dense/config.json field 'bias' differs"):
        soup_checkpoints([a, b], tmp_path / "soup")
    (a / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        soup_checkpoints([a, a], tmp_path / "soup")
    with pytest.raises(CheckpointError, match="not a directory"):
        soup_checkpoints([tmp_path / "missing"], tmp_path / "soup")


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1.0], "one weight per checkpoint"),
        ([1.0, -1.0], ">= 0"),
        ([0.0, 0.0], "not all 0"),
        ([1, float("nan")], "finite"),
    ],
)
def test_bad_weights_are_refused(tmp_path, weights, match):
    ckpts = [make_checkpoint(tmp_path / f"ckpt{i}", seed=i) for i in range(2)]
    with pytest.raises(InputError, match=match):
        soup_checkpoints(ckpts, tmp_path / "soup", weights=weights)


def test_existing_output_needs_overwrite_and_is_replaced_whole(tmp_path):
    ckpts = [make_checkpoint(tmp_path / f"ckpt{i}", seed=i) for i in range(2)]
    out = tmp_path / "soup"
    out.mkdir()
    soup_checkpoints(ckpts, out)  # an empty directory is fine
    (out / "stale.txt").write_text("from an older soup")
    with pytest.raises(InputError, match="not empty"):
        soup_checkpoints(ckpts, out, weights=[1, 0])
    assert (out / "stale.txt").exists()
    soup_checkpoints(ckpts, out, weights=[1, 0], overwrite=True)
    assert not (out / "stale.txt").exists()
    _assert_tensors_equal(_all_tensors(out), _all_tensors(ckpts[0]))
    assert _leftovers(tmp_path) == []


def test_failure_while_writing_leaves_no_partial_output(tmp_path, monkeypatch):
    ckpts = [make_checkpoint(tmp_path / f"ckpt{i}", seed=i) for i in range(2)]
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        return save_file(*args, **kwargs)

    monkeypatch.setattr(soup, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        soup_checkpoints(ckpts, tmp_path / "soup")
    assert not (tmp_path / "soup").exists()
    assert _leftovers(tmp_path) == []


def test_cli_subcommand(tmp_path, capsys):
    ckpts = [make_checkpoint(tmp_path / f"ckpt{i}", seed=i) for i in range(2)]
    parser = argparse.ArgumentParser(prog="gemma-embed")
    soup.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "soup"
    args = parser.parse_args(["soup", *map(str, ckpts), "--out", str(out), "--weights", "1", "3"])
    assert args.func(args) == 0
    assert str(out) in capsys.readouterr().out
    _assert_tensors_equal(_all_tensors(out), _expected(ckpts, [0.25, 0.75]))
