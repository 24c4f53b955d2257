"""The data module: pair-file formats and columns, bad rows, ids, mixtures and the resumable batch sampler."""

import gzip
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gemma_embed.errors import ConfigError, DataError
from gemma_embed.io.files import atomic_write, write_json
from gemma_embed.io.tables import read_jsonl, read_lines, read_text, write_jsonl
from gemma_embed.prompts import DEFAULT_PROMPTS
from gemma_embed.train.data.mixture import Mixture, MixtureBatchSampler
from gemma_embed.train.data.pairs import (
    MANIFEST,
    TASK_PROMPTS,
    Columns,
    Example,
    PairDataset,
    load_training_sets,
    stable_id,
)
from gemma_embed.train.recipe import STAGES, stage_config

ROWS = [
    {"query": "q1", "positive": "p1", "negatives": ["n1a", "n1b"]},
    {"query": "q2", "positive": "p2", "negative": "n2"},
    {"query": "q3", "positive": "p3"},
]


def _dataset(name: str, n: int, negatives: int = 0) -> PairDataset:
    examples = [
        Example(f"{name}-q{i}", f"{name}-p{i}", tuple(f"{name}-n{i}-{k}" for k in range(negatives)))
        for i in range(n)
    ]
    return PairDataset(examples, name=name, query_prompt=f"{name}: ", document_prompt="doc: ")


# ----------------------------------------------------------------------------------------- formats


def test_jsonl_csv_tsv_parquet_give_the_same_examples(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    write_jsonl(jsonl, ROWS)
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        'query,positive,negatives,negative\nq1,p1,"[""n1a"", ""n1b""]",\nq2,p2,,n2\nq3,p3,,\n',
        encoding="utf-8",
    )
    tsv_path = tmp_path / "pairs.tsv"
    tsv_path.write_text(
        'query\tpositive\tnegatives\tnegative\nq1\tp1\t["n1a", "n1b"]\t\nq2\tp2\t\tn2\nq3\tp3\t\t\n',
        encoding="utf-8",
    )
    parquet = tmp_path / "pairs.parquet"
    table = pa.table(
        {
            "query": ["q1", "q2", "q3"],
            "positive": ["p1", "p2", "p3"],
            "negatives": [["n1a", "n1b"], None, []],
            "negative": [None, "n2", None],
        }
    )
    pq.write_table(table, parquet)
    expected = [("q1", "p1", ("n1a", "n1b")), ("q2", "p2", ("n2",)), ("q3", "p3", ())]
    for path in (jsonl, csv_path, tsv_path, parquet):
        ds = PairDataset.from_file(path, task="sentence_similarity")
        assert [(e.query, e.positive, e.negatives) for e in ds] == expected, path.name
        assert ds.name == "pairs"
        assert ds.query_prompt == ds.document_prompt == DEFAULT_PROMPTS["STS"]


def test_custom_column_names_and_explicit_prompts(tmp_path):
    path = tmp_path / "custom.jsonl"
    write_jsonl(path, [{"question": "what?", "answer": "that", "bad": ["x"], "qid": 7}])
    columns = Columns(query="question", positive="answer", negatives="bad", query_id="qid")
    ds = PairDataset.from_file(path, columns=columns, name="qa", query_prompt="Q: ", document_prompt="D: ")
    (example,) = ds.examples
    assert (example.query, example.positive, example.negatives) == ("what?", "that", ("x",))
    assert example.query_key == "7" and example.query_id == stable_id("7")
    assert example.positive_id == stable_id("that")
    assert (ds.name, ds.query_prompt, ds.document_prompt) == ("qa", "Q: ", "D: ")


def test_default_task_is_retrieval_with_document_prompt(tmp_path):
    path = tmp_path / "r.jsonl"
    write_jsonl(path, ROWS)
    ds = PairDataset.from_file(path)
    assert (ds.query_prompt, ds.document_prompt) == TASK_PROMPTS["retrieval"]
    assert ds.document_prompt == "title: none | text: "


@pytest.mark.parametrize(
    "bad", [{"query": "q"}, {"query": "q", "positive": ""}, {"query": "q", "positive": "  "}]
)
def test_row_without_positive_names_file_and_line(tmp_path, bad):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [ROWS[0], ROWS[1], bad]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl, line 3: missing or empty 'positive'"):
        PairDataset.from_file(path)


def test_bad_rows_in_csv_and_parquet_name_the_location(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("query,positive\nq1,p1\nq2,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv, line 3: missing or empty 'positive'"):
        PairDataset.from_file(csv_path)
    parquet = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"query": ["a", "b"], "positive": ["x", None]}), parquet)
    with pytest.raises(DataError, match=r"bad\.parquet, row 2: missing or empty 'positive'"):
        PairDataset.from_file(parquet)


def test_malformed_files_raise_data_error(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"query": "q", "positive": "p"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl, line 2: invalid JSON"):
        PairDataset.from_file(broken)
    wrong_type = tmp_path / "types.jsonl"
    write_jsonl(wrong_type, [{"query": "q", "positive": 5}])
    with pytest.raises(DataError, match=r"line 1: column 'positive' must be text"):
        PairDataset.from_file(wrong_type)
    bad_list = tmp_path / "neg.csv"
    bad_list.write_text("query,positive,negatives\nq,p,not-a-list\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"neg\.csv, line 2: column 'negatives' must hold a JSON array"):
        PairDataset.from_file(bad_list)
    text_file = tmp_path / "x.txt"
    text_file.write_text("q", encoding="utf-8")
    with pytest.raises(DataError, match="unknown table format"):
        PairDataset.from_file(text_file)
    with pytest.raises(DataError, match="no such file"):
        PairDataset.from_file(tmp_path / "missing.jsonl")


def test_text_reading_gzip_bom_and_cesu8_surrogates(tmp_path):
    packed = tmp_path / "lines.txt.gz"
    packed.write_bytes(gzip.compress("\ufeffeins\r\nzwei\n".encode()))
    assert read_lines(packed) == ["eins", "zwei"]
    cesu = tmp_path / "snips.json"
    cesu.write_bytes(b'{"text": "Pop \xed\xa0\xbc\xed\xbd\x95"}\n')  # U+1F355 as two 3-byte surrogates
    assert read_text(cesu) == '{"text": "Pop \U0001f355"}\n'
    assert [row for _, row in read_jsonl(cesu)] == [{"text": "Pop \U0001f355"}]
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match="not UTF-8"):
        read_text(latin1)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_save_round_trip_keeps_negatives_and_keys(tmp_path):
    examples = [Example("q", "p", ("n",), query_key="g1", positive_key="g1"), Example("q2", "p2")]
    ds = PairDataset(examples, name="s", query_prompt="", document_prompt="")
    assert ds.save(tmp_path / "s.jsonl") == 2
    assert PairDataset.from_file(tmp_path / "s.jsonl").examples == examples


# ----------------------------------------------------------------------------------------- ids


def test_stable_ids_are_signed_64_bit_and_text_determined():
    assert stable_id("hello") == stable_id("hello")
    assert stable_id("hello") != stable_id("hello ")
    assert stable_id("hello") == 9022087748821825191  # fixed: must never change between versions
    assert all(-(2**63) <= stable_id(t) < 2**63 for t in ["", "a", "日本語"])
    a, b = Example("same query", "pos A"), Example("same query", "pos B")
    assert a.query_id == b.query_id and a.positive_id != b.positive_id
    grouped = [
        Example("x", "y", query_key="intent", positive_key="intent"),
        Example("z", "w", (), "intent", "intent"),
    ]
    assert grouped[0].query_id == grouped[1].query_id == grouped[0].positive_id


def test_batch_ids_mask_repeated_queries_and_positives():
    ds = PairDataset(
        [Example("q", "p1"), Example("q", "p2"), Example("r", "p1")],
        name="d",
        query_prompt="",
        document_prompt="",
    )
    batch = MixtureBatchSampler(Mixture([ds]), batch_size=3).next_batch()
    assert batch.query_ids.dtype == np.int64 and batch.positive_ids.dtype == np.int64
    by_query = {q: i for q, i in zip(batch.queries, batch.query_ids, strict=True)}
    assert by_query["q"] == stable_id("q") and len(set(batch.query_ids.tolist())) == 2
    assert len(set(batch.positive_ids.tolist())) == 2


# ----------------------------------------------------------------------------------------- mixtures and sampling


def _take(
    sampler: MixtureBatchSampler, n: int
) -> list[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]]]:
    out = []
    for _ in range(n):
        b = sampler.next_batch()
        out.append((b.dataset, tuple(b.queries), tuple(map(tuple, b.negatives))))
    return out


def _mixture() -> Mixture:
    return Mixture([_dataset("a", 40, 3), _dataset("b", 25, 1), _dataset("c", 9, 2)], [0.5, 0.3, 0.2])


def test_sampler_is_deterministic_and_seed_dependent():
    first = _take(MixtureBatchSampler(_mixture(), 4, num_negatives=2, seed=3), 30)
    again = _take(MixtureBatchSampler(_mixture(), 4, num_negatives=2, seed=3), 30)
    other = _take(MixtureBatchSampler(_mixture(), 4, num_negatives=2, seed=4), 30)
    assert first == again
    assert first != other


def test_every_batch_comes_from_one_dataset_with_its_prompts():
    sampler = MixtureBatchSampler(_mixture(), 4, num_negatives=2, seed=0)
    for batch in (sampler.next_batch() for _ in range(50)):
        assert all(t.startswith(f"{batch.dataset}-") for t in batch.queries + batch.positives)
        assert all(n.startswith(f"{batch.dataset}-") for row in batch.negatives for n in row)
        assert batch.query_prompt == f"{batch.dataset}: " and batch.document_prompt == "doc: "
        assert len(batch.queries) == 4 and all(len(row) == 2 for row in batch.negatives)


def test_exact_resume_from_saved_state_mid_epoch():
    full = _take(MixtureBatchSampler(_mixture(), 4, num_negatives=2, seed=11), 40)
    head = MixtureBatchSampler(_mixture(), 4, num_negatives=2, seed=11)
    _take(head, 17)
    state = json.loads(json.dumps(head.state_dict()))  # survives a JSON checkpoint
    assert state["step"] == 17 and 0 < head.epoch < len(full)
    resumed = MixtureBatchSampler(_mixture(), 4, num_negatives=2, seed=0)
    resumed.load_state_dict(state)
    assert _take(resumed, 23) == full[17:]


def test_state_for_another_setup_is_refused():
    state = MixtureBatchSampler(_mixture(), 4).state_dict()
    with pytest.raises(ConfigError, match="another mixture or batch setup"):
        MixtureBatchSampler(_mixture(), 8).load_state_dict(state)
    with pytest.raises(ConfigError, match="version"):
        MixtureBatchSampler(_mixture(), 4).load_state_dict(state | {"version": 99})


def test_each_pass_visits_every_example_once_and_small_sets_give_whole_batches():
    ds = _dataset("a", 10)
    sampler = MixtureBatchSampler(Mixture([ds]), 5, seed=2)
    first_pass = [q for _ in range(2) for q in sampler.next_batch().queries]
    assert sorted(first_pass) == sorted(e.query for e in ds)
    assert len(sampler) == 2
    tiny = MixtureBatchSampler(Mixture([_dataset("t", 3)]), 8)
    assert len(tiny.next_batch().queries) == 3


def test_dataset_choice_follows_the_weights():
    sampler = MixtureBatchSampler(Mixture([_dataset("a", 50), _dataset("b", 50)], [0.8, 0.2]), 5, seed=0)
    counts = Counter(sampler.next_batch().dataset for _ in range(2000))
    assert 0.76 < counts["a"] / 2000 < 0.84


def test_negatives_required_when_the_stage_uses_them():
    with pytest.raises(DataError, match=r"a example 0: no hard negative"):
        MixtureBatchSampler(Mixture([_dataset("a", 5)]), 2, num_negatives=1)
    few = MixtureBatchSampler(Mixture([_dataset("a", 4, 1)]), 2, num_negatives=3)
    batch = few.next_batch()
    assert all(len(row) == 3 and len(set(row)) == 1 for row in batch.negatives)  # drawn with replacement


def test_mixture_weights():
    a, b = _dataset("a", 100), _dataset("b", 25)
    assert Mixture([a, b]).weights == pytest.approx([0.8, 0.2])
    assert Mixture([a, b], size_exponent=0.5).weights == pytest.approx([10 / 15, 5 / 15])
    assert Mixture([a, b], {"b": 1.0, "a": 3.0}).weights == pytest.approx([0.75, 0.25])
    with pytest.raises(ConfigError, match="mixture weights name"):
        Mixture([a, b], {"a": 1.0})
    with pytest.raises(ConfigError, match="non-negative"):
        Mixture([a, b], [1.0, -1.0])
    with pytest.raises(ConfigError, match="unique"):
        Mixture([a, a])


def test_stage_presets_are_plain_values():
    pre, fine = stage_config("pre-finetuning"), stage_config("finetuning")
    assert pre.num_negatives == 0 and fine.num_negatives >= 1 and pre.batch_size > fine.batch_size
    assert json.loads(json.dumps(fine.to_dict()))["num_negatives"] == fine.num_negatives
    assert set(STAGES) == {"pre-finetuning", "finetuning"}
    with pytest.raises(ConfigError, match="unknown training stage"):
        stage_config("warmup")


def test_load_training_sets_reads_the_manifest(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    write_jsonl(tmp_path / "b.jsonl", ROWS[:1])
    write_json(
        tmp_path / MANIFEST,
        {
            "sets": {
                "a": {"file": "a.jsonl", "query_prompt": "QA: ", "document_prompt": "DA: "},
                "b": {"file": "b.jsonl", "query_prompt": "QB: ", "document_prompt": "DB: "},
            }
        },
    )
    (b,) = load_training_sets(tmp_path, ["b"])
    assert (b.name, len(b), b.query_prompt, b.document_prompt) == ("b", 1, "QB: ", "DB: ")
    assert [d.name for d in load_training_sets(tmp_path)] == ["a", "b"]
    with pytest.raises(ConfigError, match="unknown training sets"):
        load_training_sets(tmp_path, ["zzz"])
