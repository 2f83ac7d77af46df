"""Text calibration data as users hold it: raw text tokenised with the checkpoint's own tokenizer, or token ids.

A `.txt` file is one document; a `.jsonl` holds one object per line, either `{"text": ...}` (a
document) or `{"input_ids": [...]}` with an optional `"attention_mask"` (kept: padding never
enters a mean). Each document is tokenised once with the tokenizer saved beside the model's
config.json (its special tokens included, as the peers tokenise), then cut into sequences of
`seq_len` tokens (a shorter remainder of at least two tokens is kept). Packed (`pack=True`, the
causal-lm task's data, as transformers' run_clm packs it), the documents' tokens are joined and cut
into whole sequences of `seq_len`, the remainder dropped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import GardenerError

# the files a saved transformers tokenizer leaves beside config.json (any one of them)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt", "vocab.json",
                   "spiece.model")
FORMATS = ('a .txt file of text, or a .jsonl of {"text": ...} or {"input_ids": [...], "attention_mask": [...]} '
           'lines')


@dataclass(frozen=True)
class Sequence:
    """One calibration sequence: its token ids and which of them are real (1) rather than padding (0)."""

    ids: tuple[int, ...]
    mask: tuple[int, ...]


def read_sequences(path: Path, model_dir: Path, seq_len: int, vocab_size: int | None, flag: str = "--calib-data",
                   pack: bool = False) -> list[Sequence]:
    """Every sequence the file holds (given ids first, then tokenised text); one-line errors name the flag, the
    file and the line."""
    if not path.is_file() or path.suffix not in (".txt", ".jsonl"):
        raise GardenerError(f"{flag} {path}: a text model takes {FORMATS}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GardenerError(f"{flag} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix == ".txt":
        documents, given = [text], []
    else:
        documents, given = _jsonl(path, text, flag)
    out = [_checked(f"{flag} {path} line {line}", ids, mask, vocab_size) for line, ids, mask in given]
    long = next((line for (line, ids, _), row in zip(given, out) if pack and len(row.ids) > seq_len), None)
    if long is not None:
        raise GardenerError(f"{flag} {path} line {long}: longer than --seq-len {seq_len}; give token ids of at most "
                            f"{seq_len} per line, or text to be packed")
    if documents:
        tokenizer = load_tokenizer(model_dir, flag)
        encoded = [_encode(tokenizer, document) for document in documents]
        for ids in encoded:
            if vocab_size is not None and any(not 0 <= i < vocab_size for i in ids):
                raise GardenerError(f"{model_dir}: its tokenizer gives token ids beyond the model's vocabulary "
                                    f"(0..{vocab_size - 1}) for {path}; is it this model's tokenizer?")
        pieces = [_chunks(ids, seq_len) for ids in encoded]
        if pack:
            joined = [i for ids in encoded for i in ids]
            pieces = [[c for c in _chunks(joined, seq_len) if len(c) == seq_len]]
            if not pieces[0]:
                raise GardenerError(f"{flag} {path}: {len(joined)} tokens, shorter than one sequence of {seq_len} "
                                    f"(--seq-len)")
        out += [Sequence(tuple(c), (1,) * len(c)) for chunks in pieces for c in chunks if len(c) >= 2]
    out = [s for s in out if sum(s.mask) >= 2]
    if not out:
        raise GardenerError(f"{flag} {path}: no sequence of at least 2 real tokens")
    return out


def _jsonl(path: Path, text: str, flag: str) -> tuple[list[str], list[tuple[int, list, list | None]]]:
    documents, given = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise GardenerError(f"{flag} {path} line {number}: not JSON ({exc})") from None
        if isinstance(row, dict) and isinstance(row.get("text"), str):
            documents.append(row["text"])
        elif isinstance(row, dict) and "input_ids" in row:
            given.append((number, row["input_ids"], row.get("attention_mask")))
        else:
            raise GardenerError(f"{flag} {path} line {number}: expected an object with \"text\" (a string) or "
                                f"\"input_ids\"")
    return documents, given


def _checked(where: str, ids, mask, vocab_size: int | None) -> Sequence:
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise GardenerError(f"{where}: input_ids must be a list of whole numbers")
    if vocab_size is not None and any(not 0 <= i < vocab_size for i in ids):
        raise GardenerError(f"{where}: input_ids must lie in 0..{vocab_size - 1} (the model's vocabulary)")
    if mask is None:
        return Sequence(tuple(ids), (1,) * len(ids))
    if not isinstance(mask, list) or len(mask) != len(ids) or any(m not in (0, 1) or isinstance(m, float)
                                                                  for m in mask):
        raise GardenerError(f"{where}: attention_mask must be a list of 0s and 1s as long as input_ids ({len(ids)})")
    if sum(mask) < 2:
        raise GardenerError(f"{where}: attention_mask marks {sum(mask)} real token(s); a sequence needs at least 2")
    return Sequence(tuple(ids), tuple(int(m) for m in mask))


def load_tokenizer(model_dir: Path, flag: str = "--calib-data"):
    """The checkpoint's own tokenizer (files beside config.json), or the one-line error saying to pass ids."""
    instead = f'pass {flag} as a .jsonl of {{"input_ids": [...]}} lines instead'
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise GardenerError(f"{model_dir}: has no tokenizer beside config.json (none of {', '.join(TOKENIZER_FILES)}), "
                            f"so its text cannot be tokenised; {instead}")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as exc:  # a broken or foreign tokenizer: its own words, on one line
        reason = " ".join(str(exc).split())[:300]
        raise GardenerError(f"{model_dir}: its tokenizer does not load ({type(exc).__name__}: {reason}); "
                            f"{instead}") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def _encode(tokenizer, document: str) -> list[int]:
    """A document's token ids, with the tokenizer's own special tokens (a LLaMA BOS, BERT's [CLS] ... [SEP])."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "longer than the maximum": it is cut into sequences next
    try:
        return list(tokenizer(document, add_special_tokens=True)["input_ids"])
    finally:
        hf_logging.set_verbosity(verbosity)


def _chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]
