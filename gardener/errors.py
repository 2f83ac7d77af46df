"""The one exception type a user mistake raises; the CLI turns it into a one-line message."""
from __future__ import annotations

import re
from collections.abc import Callable


class GardenerError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop), raised like Ctrl-C so that every temporary is removed."""


class SettingError(GardenerError):
    """A setting with a value no run can use, named by its Python name (`dtype`, `ratio`); the
    command line shows the same message under the option's flag (`--dtype`).

    `detail` may name other settings as `{name}` ("and {protect} both name block 3"): shown as
    the name here, as the flag on the command line (`render`). A detail that names the setting
    itself is the whole message ("give exactly one of {ratio} or {remove}").
    """

    def __init__(self, setting: str, detail: str):
        self.setting, self.detail = setting, detail
        super().__init__(self.render(lambda name: name))

    def render(self, shown: Callable[[str], str]) -> str:
        """The message with each setting shown as `shown(name)` (e.g. its command-line flag)."""
        lead = "" if "{" + self.setting + "}" in self.detail else shown(self.setting) + (
            "" if self.detail.startswith(":") else " ")
        return lead + re.sub(r"\{([a-z_]+)\}", lambda m: shown(m.group(1)), self.detail)
