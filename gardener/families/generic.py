"""The last fallback: any `<list>.N.` layout (a decoder when a path component says so)."""
from ._registry import ANY_STACK, LIST_NAMES, Family, StackKind, register

GENERIC = register(Family(
    "generic", "any other `<list>.N.` layout",
    stacks=(
        StackKind("generic", rf"(?P<stack>(?:[\w-]+\.)*?decoder\.(?:[\w-]+\.)*?{LIST_NAMES})\.(?P<index>\d+)",
                  "decoder", example="model.decoder.layers.0.fc.weight"),
        StackKind("generic", ANY_STACK, "main", example="trunk.layer.0.mixer.weight"),
    ),
    priority=-1000,  # always last
))
