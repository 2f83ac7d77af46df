"""The one exception type a user mistake raises; the CLI turns it into a one-line message."""


class GardenerError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop), raised like Ctrl-C so that every temporary is removed."""
