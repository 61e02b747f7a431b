"""One root error for the project; each message names the cause and the fix."""


class RagError(Exception):
    """Base class: the CLI and UI show its message as one line."""


class IngestError(RagError):
    """A document could not be read or cleaned."""


class IndexMissingError(RagError):
    """No index has been built yet."""


class IndexCorruptError(RagError):
    """An index file is missing, truncated or unreadable."""


class IndexLockedError(RagError):
    """Another `rag index` holds the index lock."""


class ModelMismatchError(RagError):
    """The index was built with another embedding model than the configured one."""


class InputError(RagError):
    """The user's question or arguments are not usable."""


class EndpointError(RagError):
    """The LLM endpoint failed: unreachable, slow, refused or broken stream."""


class SettingsError(RagError):
    """A setting (environment, `.env` or command-line option) has a value it cannot take."""
