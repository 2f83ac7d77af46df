"""The causal-lm miniature's text: a formal language whose verbs agree with their subjects across nested
clauses, brackets that close in order, the same bytes from the same seed, and a tokenizer that reads it whole."""
from __future__ import annotations

import json

import pytest
from conftest import cli, one_line_error

from gardener.data.synthetic_text import VOCABULARY, unigram_perplexity, write_text_corpus


def parse_noun_phrase(words: list[str], at: int) -> tuple[int, int]:
    """(number of the head noun: 0 singular, 1 plural; where the phrase ends); asserts the grammar and agreement."""
    assert words[at] == "the", (words[at:], at)
    at += 1
    while words[at].startswith("a"):
        at += 1
    assert words[at][0] in "nN", words[at:]
    number, at = int(words[at][0] == "N"), at + 1
    if words[at] == "that":
        inner, at = parse_noun_phrase(words, at + 1)
        assert words[at][0] == "vV"[inner], f"relative clause: a {'plural' if inner else 'singular'} subject " \
                                             f"takes {words[at]}"
        at += 1
    elif words[at] in ("(", "["):
        closing = {"(": ")", "[": "]"}[words[at]]
        _, at = parse_noun_phrase(words, at + 1)
        assert words[at] == closing
        at += 1
    return number, at


def parse_sentence(words: list[str], at: int) -> int:
    number, at = parse_noun_phrase(words, at)
    assert words[at][0] == "vV"[number], f"{words[at]} after a {'plural' if number else 'singular'} subject"
    at += 1
    if words[at] == "the":
        _, at = parse_noun_phrase(words, at)
    if words[at] == "and":
        second, at = parse_noun_phrase(words, at + 1)
        assert words[at][0] == "vV"[second]
        at += 1
    assert words[at] == "."
    return at + 1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "corpus"
    record = write_text_corpus(out, documents=300, test_documents=40, seed=0)
    return out, record


def documents(path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def test_every_sentence_parses_and_its_verbs_agree_with_their_subjects_across_nested_clauses(corpus):
    out, _ = corpus
    nested = 0
    for text in documents(out / "train.jsonl") + documents(out / "test.jsonl"):
        words, at = text.split(), 0
        while at < len(words):
            at = parse_sentence(words, at)
        nested += text.count("that the")
    assert nested > 100  # the long-range agreements are there to be learnt


def test_the_same_seed_writes_the_same_bytes_and_another_seed_other_text(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    write_text_corpus(again, documents=300, test_documents=40, seed=0)
    assert (again / "train.jsonl").read_bytes() == (out / "train.jsonl").read_bytes()
    assert (again / "test.jsonl").read_bytes() == (out / "test.jsonl").read_bytes()
    write_text_corpus(tmp_path / "other", documents=300, test_documents=40, seed=1)
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (out / "train.jsonl").read_bytes()


def test_its_tokenizer_reads_the_text_whole_and_the_unigram_mark_is_recorded(corpus):
    from transformers import AutoTokenizer

    out, record = corpus
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer", local_files_only=True)
    assert len(tokenizer) == len(VOCABULARY)
    for text in documents(out / "test.jsonl")[:20]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids
        assert tokenizer.convert_ids_to_tokens(ids[1:]) == text.split()
    train, test = documents(out / "train.jsonl"), documents(out / "test.jsonl")
    assert record["unigram_perplexity"] == pytest.approx(unigram_perplexity(train, test))
    assert 15 < record["unigram_perplexity"] < len(VOCABULARY)  # far from what context can bring it down to
    assert json.loads((out / "gardener.json").read_text())["unigram_perplexity"] == record["unigram_perplexity"]


def test_make_data_text_writes_the_corpus_and_refuses_video_options(tmp_path, capsys):
    code, _, err = cli(["make-data", tmp_path / "t", "--text", "--documents", "20", "--test-documents", "5"], capsys)
    assert code == 0 and "unigram perplexity of the test text" in " ".join(err.split())
    assert len(documents(tmp_path / "t" / "train.jsonl")) == 20
    code, _, err = cli(["make-data", tmp_path / "u", "--text", "--frames", "8"], capsys)
    assert code == 2 and one_line_error(err) == "error: --frames: does not apply to text (--text)"
    code, _, err = cli(["make-data", tmp_path / "v", "--documents", "8"], capsys)
    assert code == 2 and one_line_error(err) == "error: --documents: does not apply to videos (without --text)"
    assert not (tmp_path / "u").exists() and not (tmp_path / "v").exists()
