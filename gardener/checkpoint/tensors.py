"""What a stored tensor is: its dtype tag, shape and size; the file names and suffixes checkpoints use."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np



# safetensors dtype tag -> numpy dtype of the array we hand out (BF16 as raw bits)
ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
    "F8_E4M3": np.uint8, "F8_E5M2": np.uint8,
}
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
NESTED_KEYS = ("model", "module", "state_dict", "model_state")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
HF_WEIGHT_FILES = (  # in the order transformers' from_pretrained looks for them
    "model.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json",
)


def is_parameter_dtype(dtype: str) -> bool:
    """A safetensors dtype tag of floating-point values (F16, BF16, F32, F64, F8_*)."""
    return dtype.startswith(("F", "BF"))


@dataclass(frozen=True)
class TensorInfo:
    """Name, safetensors-style dtype tag and shape of one stored tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def is_parameter(self) -> bool:
        """Whether it counts as a parameter: floating point (an int64 `position_ids` buffer or a
        `num_batches_tracked` counter is stored beside the weights but learns nothing)."""
        return is_parameter_dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(ST_DTYPES[self.dtype]).itemsize
