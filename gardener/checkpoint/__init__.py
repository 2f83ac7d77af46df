"""Lazy reading of checkpoints: HF directories, safetensors files and PyTorch state dicts.

Tensors are exposed as numpy arrays that view the file (safetensors are memory-mapped;
PyTorch zip files are loaded with `mmap=True`), so a block is only read from disk when a
criterion touches it and peak memory follows the largest block, not the checkpoint.
bfloat16, which numpy lacks, is returned as its raw uint16 bit patterns; `TensorInfo.dtype`
says which.
"""
from .open import Checkpoint, open_checkpoint
from .tensors import FLOAT_DTYPES, HF_WEIGHT_FILES, NESTED_KEYS, TORCH_SUFFIXES, TensorInfo

__all__ = ["FLOAT_DTYPES", "HF_WEIGHT_FILES", "NESTED_KEYS", "TORCH_SUFFIXES", "Checkpoint", "TensorInfo",
           "open_checkpoint"]
