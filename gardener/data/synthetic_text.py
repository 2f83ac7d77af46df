"""A small formal language written as text, for the causal-lm task's miniature: nothing is downloaded.

Each sentence's verb agrees in number with its subject (singular nouns take singular verbs, plural nouns plural
ones), and a relative clause ("the n3 that the N5 V2 v7 .") or a bracketed aside can stand between them, so
that predicting a verb needs the context a few words back, across the nested clause; brackets close in the
order they opened. A word-level tokenizer of the language is written beside the text, so that a model made
from a config can read it as any checkpoint reads its own text. Everything follows from the seed.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import GardenerError

WORDS_PER_KIND = 8
NOUNS = ([f"n{i}" for i in range(WORDS_PER_KIND)], [f"N{i}" for i in range(WORDS_PER_KIND)])  # singular, plural
VERBS = ([f"v{i}" for i in range(WORDS_PER_KIND)], [f"V{i}" for i in range(WORDS_PER_KIND)])
ADJECTIVES = [f"a{i}" for i in range(WORDS_PER_KIND)]
FUNCTION = ["the", "that", "and", ".", "(", ")", "[", "]"]
SPECIAL = ["[UNK]", "<s>", "</s>"]
VOCABULARY = SPECIAL + FUNCTION + ADJECTIVES + [w for kind in (NOUNS, VERBS) for number in kind for w in number]
MAX_DEPTH = 2  # relative clauses and asides nest at most this deep


def noun_phrase(rng: np.random.Generator, number: int, depth: int) -> list[str]:
    """'the' [adjectives] noun, then perhaps a relative clause (its own subject and verb, both agreeing) or an
    aside in brackets."""
    words = ["the"] + list(rng.choice(ADJECTIVES, int(rng.integers(0, 3)))) + [str(rng.choice(NOUNS[number]))]
    if depth < MAX_DEPTH and rng.random() < 0.45:
        inner = int(rng.integers(2))
        words += ["that"] + noun_phrase(rng, inner, depth + 1) + [str(rng.choice(VERBS[inner]))]
    elif depth < MAX_DEPTH and rng.random() < 0.2:
        opening, closing = ("(", ")") if rng.random() < 0.5 else ("[", "]")
        words += [opening] + noun_phrase(rng, int(rng.integers(2)), depth + 1) + [closing]
    return words


def sentence(rng: np.random.Generator) -> list[str]:
    """Subject, its agreeing verb, perhaps an object; perhaps a second clause after 'and'."""
    number = int(rng.integers(2))
    words = noun_phrase(rng, number, 0) + [str(rng.choice(VERBS[number]))]
    if rng.random() < 0.5:
        words += noun_phrase(rng, int(rng.integers(2)), 1)
    if rng.random() < 0.25:
        second = int(rng.integers(2))
        words += ["and"] + noun_phrase(rng, second, 1) + [str(rng.choice(VERBS[second]))]
    return words + ["."]


def document(rng: np.random.Generator, sentences: tuple[int, int] = (4, 12)) -> str:
    return " ".join(w for _ in range(int(rng.integers(*sentences))) for w in sentence(rng))


def unigram_perplexity(train: list[str], test: list[str]) -> float:
    """The perplexity on `test` of word frequencies counted on `train` (add-one smoothed over the vocabulary):
    what a model that ignores context reaches, the mark a trained model must fall far below."""
    counts = Counter(w for d in train for w in d.split())
    total, size = sum(counts.values()), len(VOCABULARY)
    words = [w for d in test for w in d.split()]
    return math.exp(-sum(math.log((counts[w] + 1) / (total + size)) for w in words) / len(words))


def save_tokenizer(folder: Path) -> None:
    """A word-level tokenizer of the language that starts each text with <s>, as transformers saves one."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCABULARY)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>",
                            eos_token="</s>").save_pretrained(folder)


def write_text_corpus(out: str | Path, *, documents: int = 2000, test_documents: int = 200, seed: int = 0,
                      force: bool = False, arguments: dict | None = None) -> dict:
    """`make-data --text`: train.jsonl and test.jsonl of {"text": ...} documents, tokenizer/ and gardener.json
    (with the unigram perplexity of the test text), written whole into `out` or not at all."""
    from ..fileio import atomic_dir, write_text
    from ..manifest import manifest
    from ..settings import check_number

    check_number("--seed", seed, 0)
    if documents < 1 or test_documents < 1:
        raise GardenerError(f"--documents and --test-documents must be at least 1 (got {documents}, {test_documents})")
    rng = np.random.default_rng([seed, 7])
    train = [document(rng) for _ in range(documents)]
    test = [document(rng) for _ in range(test_documents)]
    with atomic_dir(out, force) as tmp:
        for name, docs in (("train", train), ("test", test)):
            write_text(tmp / f"{name}.jsonl", "".join(json.dumps({"text": d}) + "\n" for d in docs))
        save_tokenizer(tmp / "tokenizer")
        record = manifest("make-data", [], {k: str(v) if isinstance(v, Path) else v
                                            for k, v in (arguments or {}).items()})
        record.update({"documents": documents, "test_documents": test_documents, "vocabulary": len(VOCABULARY),
                       "words": {"train": sum(len(d.split()) for d in train), "test": sum(len(d.split()) for d in test)},
                       "unigram_perplexity": unigram_perplexity(train, test)})
        write_text(tmp / "gardener.json", json.dumps(record, indent=2) + "\n")
    return record
