"""Tiny random models of every encoder family in :mod:`quantkit.families`, each with a tokenizer of its
family's kind trained in seconds with the ``tokenizers`` library (no downloads):

- WordPiece (BERT, DistilBERT, ELECTRA, MPNet): a fixed vocabulary file, the family's own fast tokenizer class;
- byte-level BPE (RoBERTa, ModernBERT): trained on the test words, RoBERTa's ``<s>``/``</s>`` or ModernBERT's
  ``[CLS]``/``[SEP]`` template;
- Unigram (XLM-RoBERTa, ALBERT, DeBERTa-v2): trained on the test words with a Metaspace pre-tokenizer (what
  SentencePiece does), wrapped in the family's fast tokenizer class.

Each model's ``vocab_size`` is its tokenizer's length and its special-token ids are the tokenizer's, so every
token a test encodes has an embedding row. Models are saved as safetensors with their tokenizer, loadable by
``AutoTokenizer`` / ``AutoModelFor*`` exactly as a Hub checkpoint of the family would be.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import NAMES, NER_TAGS, PLACES, WORDS

#: The words every tokenizer is trained on / holds: enough for the test data of every task.
CORPUS_WORDS = [*WORDS, *NAMES, *PLACES, "who", "where", "is", "in", "what", "?", "."]
LETTERS = "abcdefghijklmnopqrstuvwxyz"

#: Tiny architecture shared by all families (hidden 32, 2 layers, 2 heads, FFN 64, 128 positions).
HIDDEN, LAYERS, HEADS, FFN, POSITIONS = 32, 2, 2, 64, 128

#: Which kind of tokenizer each family's checkpoints ship, and its special tokens in id order.
TOKENIZERS: dict[str, dict[str, Any]] = {
    "bert": {"kind": "wordpiece", "cls": "BertTokenizerFast"},
    "distilbert": {"kind": "wordpiece", "cls": "DistilBertTokenizerFast"},
    "electra": {"kind": "wordpiece", "cls": "ElectraTokenizerFast"},
    "mpnet": {"kind": "wordpiece-mpnet", "cls": "MPNetTokenizerFast"},
    "roberta": {"kind": "bpe", "cls": "RobertaTokenizerFast"},
    "modernbert": {"kind": "bpe-cls", "cls": "PreTrainedTokenizerFast"},
    "xlm-roberta": {"kind": "unigram", "cls": "XLMRobertaTokenizerFast",
                    "special": ["<s>", "<pad>", "</s>", "<unk>"], "pair_types": False},
    "albert": {"kind": "unigram", "cls": "AlbertTokenizerFast",
               "special": ["<pad>", "<unk>", "[CLS]", "[SEP]"], "pair_types": True},
    "deberta-v2": {"kind": "unigram", "cls": "DebertaV2TokenizerFast",
                   "special": ["[PAD]", "[CLS]", "[SEP]", "[UNK]"], "pair_types": True},
}


def _corpus() -> list[str]:
    import random

    rng = random.Random(0)
    lines = [" ".join(rng.choices(CORPUS_WORDS, k=12)) for _ in range(400)]
    return lines + [" ".join(CORPUS_WORDS), " ".join(LETTERS)]


def _wordpiece(path: Path, cls_name: str, mpnet: bool) -> Any:
    import transformers

    special = ["<s>", "<pad>", "</s>", "<unk>"] if mpnet else ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = [*special, *CORPUS_WORDS, *[f"##{c}" for c in LETTERS], *LETTERS]
    if mpnet:
        vocab.append("<mask>")  # MPNet keeps its mask token last
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cls = getattr(transformers, cls_name)
    # positional: vocab_file (4.57) or vocab (5.x, where vocab_file= is ignored)
    return cls(str(path / "vocab.txt"), do_lower_case=True, model_max_length=POSITIONS)


def _bpe(cls_name: str, cls_style: bool) -> Any:
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if cls_style:  # ModernBERT: a GPT-NeoX-like byte-level BPE with BERT's [CLS] text [SEP] template
        special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    else:
        special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE(unk_token=special[0] if cls_style else "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=not cls_style)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    if cls_style:
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        return transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
            mask_token="[MASK]", model_max_length=POSITIONS, model_input_names=["input_ids", "attention_mask"])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")), add_prefix_space=True)
    return getattr(transformers, cls_name)(tokenizer_object=tok, model_max_length=POSITIONS)


def _unigram(cls_name: str, special: list[str], pair_types: bool) -> Any:
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    mask = "<mask>" if special[0] == "<s>" else "[MASK]"
    unk = next(t for t in special if "unk" in t.lower())
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=[*special, mask], unk_token=unk,
                                      show_progress=False, initial_alphabet=list(LETTERS))
    tok.train_from_iterator(_corpus(), trainer)
    if special[0] == "<s>":  # XLM-R: <s> A </s></s> B </s>, no segment ids
        bos, eos = "<s>", "</s>"
        single, pair = f"{bos} $A {eos}", f"{bos} $A {eos} {eos} $B {eos}"
    else:
        bos, eos = "[CLS]", "[SEP]"
        single, pair = f"{bos} $A {eos}", f"{bos} $A {eos} $B:1 {eos}:1"
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))])
    kwargs: dict[str, Any] = {}
    if cls_name == "AlbertTokenizerFast":
        kwargs.update(do_lower_case=True)
    return getattr(transformers, cls_name)(tokenizer_object=tok, model_max_length=POSITIONS, **kwargs)


def build_tokenizer(model_type: str, path: Path) -> Any:
    """A tiny tokenizer of ``model_type``'s kind, saved in ``path`` (returned loaded)."""
    spec = TOKENIZERS[model_type]
    kind = spec["kind"]
    if kind.startswith("wordpiece"):
        tok = _wordpiece(path, spec["cls"], mpnet=kind == "wordpiece-mpnet")
    elif kind.startswith("bpe"):
        tok = _bpe(spec["cls"], cls_style=kind == "bpe-cls")
    else:
        tok = _unigram(spec["cls"], spec["special"], spec["pair_types"])
    tok.save_pretrained(path)
    return tok


def _config(model_type: str, tok: Any, **task_kwargs: Any) -> Any:
    """A tiny config of ``model_type`` whose vocabulary and special ids are the tokenizer's."""
    import transformers

    ids = {"pad_token_id": tok.pad_token_id}
    common = dict(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  intermediate_size=FFN, max_position_embeddings=POSITIONS, **ids, **task_kwargs)
    if model_type == "distilbert":
        return transformers.DistilBertConfig(vocab_size=len(tok), dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                                             hidden_dim=FFN, max_position_embeddings=POSITIONS, **ids, **task_kwargs)
    if model_type in ("roberta", "xlm-roberta", "mpnet"):
        # position ids start after the padding id: two extra rows, as in the real checkpoints (514 for 512)
        common["max_position_embeddings"] = POSITIONS + 2
        common.update(bos_token_id=tok.bos_token_id or tok.cls_token_id, eos_token_id=tok.eos_token_id or tok.sep_token_id)
    if model_type in ("roberta", "xlm-roberta"):
        common["type_vocab_size"] = 1
    if model_type == "mpnet":
        common["relative_attention_num_buckets"] = 32
    if model_type == "electra":
        common["embedding_size"] = HIDDEN
    if model_type == "albert":
        common["embedding_size"] = 16
    if model_type == "deberta-v2":  # the DeBERTa-v3 layout: relative c2p/p2c attention, no absolute positions
        common.update(relative_attention=True, position_buckets=32, pos_att_type=["p2c", "c2p"],
                      position_biased_input=False, type_vocab_size=0, max_relative_positions=-1,
                      norm_rel_ebd="layer_norm", share_att_key=True)
    if model_type == "modernbert":  # one local (sliding window 16) layer, one global
        common.update(global_attn_every_n_layers=2, local_attention=16, cls_token_id=tok.cls_token_id,
                      sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    return transformers.AutoConfig.for_model(model_type, **common)


#: The task → (transformers Auto class, architecture suffix, extra config).
_TASK_HEADS = {
    "text-classification": ("AutoModelForSequenceClassification", "ForSequenceClassification",
                            dict(num_labels=2, id2label={0: "ham", 1: "spam"}, label2id={"ham": 0, "spam": 1})),
    "token-classification": ("AutoModelForTokenClassification", "ForTokenClassification",
                             dict(num_labels=len(NER_TAGS), id2label=dict(enumerate(NER_TAGS)),
                                  label2id={t: i for i, t in enumerate(NER_TAGS)})),
    "feature-extraction": ("AutoModel", "Model", {}),
    "question-answering": ("AutoModelForQuestionAnswering", "ForQuestionAnswering", {}),
}


def build_family_model(model_type: str, task: str, path: Path, seed: int = 0) -> Path:
    """A tiny random ``model_type`` model for ``task`` with its tokenizer, saved in ``path``."""
    import torch
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(model_type, path)
    auto, suffix, extra = _TASK_HEADS[task]
    config = _config(model_type, tok, **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, auto).from_config(config).eval()
    model.config.architectures = [type(model).__name__]
    assert type(model).__name__.endswith(suffix), type(model).__name__
    model.save_pretrained(path, safe_serialization=True)
    if task == "feature-extraction":
        _sentence_transformers_files(path)
    return path


def _sentence_transformers_files(path: Path) -> None:
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
