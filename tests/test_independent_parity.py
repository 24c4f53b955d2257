"""Independent parity check of `gemma_embed` against Hugging Face `transformers` (no sentence-transformers).

The oracle is written from the EmbeddingGemma spec only:

    ids  = <bos> + tokens((prompt + text).strip()) + <eos>   (truncated to max_seq_length, EOS kept)
    h    = transformers.Gemma3TextModel(ids)                  (one text at a time: no padding, no mask)
    v    = mean(h over all tokens) @ W2.T @ W3.T              (2_Dense then 3_Dense, no bias, identity)
    emb  = v / |v|;  Matryoshka: emb[:d] / |emb[:d]|

Every checkpoint file is written here in the layout `gemma_embed.io.checkpoint` documents, with a
`config.json` written by hand (never round-tripped through transformers) and a tokenizer trained here.
The model under test encodes all texts of a config as ONE right-padded batch mixing texts longer than
twice the sliding window with short ones, so padding and the bidirectional window are both exercised.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

import gemma_embed  # noqa: E402

TOL = 1e-5
PAD, EOS, BOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
}

LONG_A = (
    "The quick brown fox jumps over the lazy dog while seven wizards quietly hex the jovial "
    "boxer, and meanwhile the committee reviews every clause of the amended treaty before noon."
)
LONG_B = (
    "Mars is often called the Red Planet because iron oxide on its surface gives it a reddish "
    "appearance; Venus, by contrast, is wrapped in thick clouds of sulfuric acid."
)
LONG_C = "  \n  Embeddings map sentences to vectors: similar meaning, nearby points; different meaning, distant points.  "
SHORT = ["Hi", "  red planet ", "x", "   ", "Café € 🙂 price?", "A\nB"]
TEXTS = [LONG_A, *SHORT[:3], LONG_B, *SHORT[3:], LONG_C]
VERY_LONG = " ".join([LONG_A, LONG_B, LONG_C, LONG_A])  # longer than max_seq_length in tokens

CONFIGS = {
    # Transformers 4.x spelling of the RoPE settings, multi-head attention, even window, default pattern.
    "mha_w10": dict(
        hf={
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 7,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 10,
            "layer_types": ["sliding_attention"] * 5 + ["full_attention", "sliding_attention"],
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "rope_scaling": None,
        },
        dense=(256, 64),
        key_prefix="",
        tasks=("query", "document"),
    ),
    # Transformers 5.x spelling, grouped-query attention (3 query heads share 1 KV head, like the real
    # model), odd window, heads * head_dim != hidden, custom layer pattern, non-default RoPE thetas,
    # `model.`-prefixed keys and an output dim different from hidden_size.
    "gqa_w7": dict(
        hf={
            "hidden_size": 48,
            "intermediate_size": 80,
            "num_hidden_layers": 4,
            "num_attention_heads": 3,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "query_pre_attn_scalar": 24,
            "sliding_window": 7,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 5_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            },
        },
        dense=(160, 40),
        key_prefix="model.",
        tasks=("STS", None),
    ),
}
MAX_SEQ = 64


# ---- tokenizer, checkpoint and oracle, all built here ------------------------------------------------


def make_tokenizer(path: Path) -> Path:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Replace("▁", " ")
    corpus = [*PROMPTS.values(), LONG_A, LONG_B, LONG_C, "Hi red planet x A\nB"] * 3
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS))
    assert [tok.token_to_id(t) for t in SPECIALS] == [PAD, EOS, BOS, UNK]
    # As the published checkpoint: the post-processor adds <bos> ... <eos>.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", BOS), ("<eos>", EOS)],
    )
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def oracle_ids(tok: Tokenizer, prompt: str | None, text: str, max_len: int = MAX_SEQ) -> list[int]:
    body = tok.encode(((prompt or "") + text).strip(), add_special_tokens=False).ids
    return [BOS, *body[: max_len - 2], EOS]


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def build(name: str, root: Path, tokenizer_path: Path):
    spec = CONFIGS[name]
    tok = Tokenizer.from_file(str(tokenizer_path))
    hf = {
        "architectures": ["Gemma3TextModel"],
        "model_type": "gemma3_text",
        "vocab_size": tok.get_vocab_size() + 5,  # a few unused rows, as in the real (padded) vocab
        "max_position_embeddings": 128,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "pad_token_id": PAD,
        "eos_token_id": EOS,
        "bos_token_id": BOS,
        "use_bidirectional_attention": True,
        "use_cache": True,
        "dtype": "float32",
        **spec["hf"],
    }
    write_json(root / "config.json", hf)
    cfg = transformers.Gemma3TextConfig.from_pretrained(str(root))
    w = spec["hf"]["sliding_window"]
    assert cfg.sliding_window == w // 2 + 1  # transformers' exclusive bound, converted exactly once
    cfg._attn_implementation = "eager"

    torch.manual_seed(1234 + len(name))
    model = transformers.Gemma3TextModel(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:  # Gemma RMSNorm scales by (1 + w); w is zeros at init
                p.copy_(torch.randn_like(p) * 0.5 + (0.5 if "k_norm" in pname else 0.0))
            elif "embed_tokens" in pname:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    state = {spec["key_prefix"] + k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(root / "model.safetensors"), {"format": "pt"})

    hidden = hf["hidden_size"]
    d2, d3 = spec["dense"]
    w2 = torch.randn(d2, hidden) / hidden**0.5
    w3 = torch.randn(d3, d2) / d2**0.5
    for folder, weight in (("2_Dense", w2), ("3_Dense", w3)):
        write_json(
            root / folder / "config.json",
            {
                "in_features": weight.shape[1],
                "out_features": weight.shape[0],
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            },
        )
        save_file({"linear.weight": weight.contiguous()}, str(root / folder / "model.safetensors"))
    write_json(
        root / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    (root / "4_Normalize").mkdir()
    write_json(
        root / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
            {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"},
            {"idx": 4, "name": "4", "path": "4_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    write_json(root / "sentence_bert_config.json", {"max_seq_length": MAX_SEQ, "do_lower_case": False})
    write_json(
        root / "config_sentence_transformers.json",
        {"model_type": "SentenceTransformer", "prompts": PROMPTS, "default_prompt_name": None},
    )
    (root / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    return model, tok, w2, w3


class Oracle:
    def __init__(self, model, tok, w2, w3):
        self.model, self.tok, self.w2, self.w3 = model, tok, w2, w3

    @torch.no_grad()
    def hidden(self, ids: list[int]) -> torch.Tensor:
        return self.model(input_ids=torch.tensor([ids])).last_hidden_state[0]

    def embed(self, texts: list[str], task: str | None, max_len: int = MAX_SEQ) -> torch.Tensor:
        out = []
        for text in texts:
            pooled = self.hidden(oracle_ids(self.tok, PROMPTS.get(task), text, max_len)).mean(dim=0)
            v = pooled @ self.w2.T @ self.w3.T
            out.append(v / v.norm())
        return torch.stack(out)


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request, tmp_path_factory, tokenizer_json):
    root = tmp_path_factory.mktemp(request.param)
    model, tok, w2, w3 = build(request.param, root, tokenizer_json)
    return request.param, gemma_embed.load(root), Oracle(model, tok, w2, w3)


# ---- the oracle itself follows the spec ---------------------------------------------------------------


def test_oracle_masks_match_spec(case):
    """transformers' sliding layers see exactly |i - j| <= sliding_window // 2; full layers see all."""
    name, _, oracle = case
    w = CONFIGS[name]["hf"]["sliding_window"]
    ids = oracle_ids(oracle.tok, None, LONG_A)
    n = len(ids)
    assert n > 2 * w
    with torch.no_grad():
        attn = oracle.model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    dist = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()
    for layer_type, probs in zip(oracle.model.config.layer_types, attn, strict=True):
        allowed = dist <= w // 2 if layer_type == "sliding_attention" else torch.ones(n, n, dtype=torch.bool)
        seen = (probs[0] > 0).all(dim=0)  # every head
        assert torch.equal(seen, allowed), layer_type
        assert torch.equal((probs[0] > 0).any(dim=0), allowed), layer_type


def test_oracle_is_sensitive_to_window(case):
    """Guard against a vacuous check: widening the window changes long texts far beyond the tolerance."""
    _, _, oracle = case
    ids = oracle_ids(oracle.tok, None, LONG_B)
    windowed = oracle.hidden(ids)
    cfg = copy.deepcopy(oracle.model.config)
    cfg.sliding_window = 10_000
    wide = transformers.Gemma3TextModel(cfg).eval()
    wide.load_state_dict(oracle.model.state_dict())
    with torch.no_grad():
        full = wide(input_ids=torch.tensor([ids])).last_hidden_state[0]
    assert (windowed - full).abs().max() > 1e-2


# ---- parity ----------------------------------------------------------------------------------------


def test_tokenization_matches(case):
    name, embedder, oracle = case
    for task in CONFIGS[name]["tasks"]:
        mine = [len(oracle_ids(oracle.tok, PROMPTS.get(task), t, max_len=10**6)) for t in TEXTS]
        assert embedder.count_tokens(TEXTS, task=task) == mine


def test_one_padded_batch_matches_transformers(case, record_property):
    name, embedder, oracle = case
    w = CONFIGS[name]["hf"]["sliding_window"]
    for task in CONFIGS[name]["tasks"]:
        lengths = [len(oracle_ids(oracle.tok, PROMPTS.get(task), t)) for t in TEXTS]
        assert max(lengths) < MAX_SEQ  # no truncation here
        assert sum(n > 2 * w for n in lengths) >= 3 and sum(n < 2 * w for n in lengths) >= 3, lengths
        ref = oracle.embed(TEXTS, task)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing may be truncated
            got = torch.from_numpy(embedder.encode(TEXTS, task=task, batch_size=len(TEXTS)))
        assert got.dtype == torch.float32 and got.shape == ref.shape
        diff = (got - ref).abs().max().item()
        record_property(f"max_abs_diff[{name},{task}]", diff)
        print(f"{name} task={task}: max |diff| = {diff:.3g}")
        assert diff <= TOL, (name, task, diff)

        dim = ref.shape[1] // 2
        ref_d = ref[:, :dim] / ref[:, :dim].norm(dim=1, keepdim=True)
        got_d = torch.from_numpy(embedder.encode(TEXTS, task=task, dim=dim, batch_size=len(TEXTS)))
        diff_d = (got_d - ref_d).abs().max().item()
        print(f"{name} task={task} dim={dim}: max |diff| = {diff_d:.3g}")
        assert got_d.shape == (len(TEXTS), dim) and diff_d <= TOL, (name, task, diff_d)


def test_truncation_keeps_eos(case):
    name, embedder, oracle = case
    task = CONFIGS[name]["tasks"][0]
    full = oracle_ids(oracle.tok, PROMPTS.get(task), VERY_LONG, max_len=10**6)
    assert len(full) > MAX_SEQ + 10
    cut = oracle_ids(oracle.tok, PROMPTS.get(task), VERY_LONG)
    assert len(cut) == MAX_SEQ and cut[-1] == EOS and cut[:-1] == full[: MAX_SEQ - 1]
    texts = [VERY_LONG, "Hi", LONG_A]
    ref = oracle.embed(texts, task)
    with pytest.warns(UserWarning, match="truncated"):
        got = torch.from_numpy(embedder.encode(texts, task=task, batch_size=len(texts)))
    diff = (got - ref).abs().max().item()
    print(f"{name} truncation: max |diff| = {diff:.3g}")
    assert diff <= TOL, (name, diff)
    # Dropping EOS (or keeping the tail instead of the head) would give a clearly different vector.
    no_eos = oracle.hidden(full[:MAX_SEQ]).mean(dim=0) @ oracle.w2.T @ oracle.w3.T
    assert (got[0] - no_eos / no_eos.norm()).abs().max() > 1e-3
