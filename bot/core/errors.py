"""Specific exceptions with messages a support engineer can act on."""


class PolicyDeskError(Exception):
    """Base class for every error PolicyDesk raises on purpose."""


class DocumentError(PolicyDeskError):
    """A knowledge-base file could not be loaded or failed validation."""

    def __init__(self, path: str, problem: str, field: str | None = None):
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: field '{field}'" if field else path
        super().__init__(f"{where}: {problem}")


class ConfigError(PolicyDeskError):
    """A setting (policydesk.toml, a POLICYDESK_ variable, a CLI option) or the data directory is unusable."""


class ModelIntegrityError(PolicyDeskError):
    """A bundled model or tokenizer file is missing or does not match its pinned hash."""


class IndexUnavailableError(PolicyDeskError):
    """The index is empty, locked or unreachable (e.g. the Chroma server is down)."""


class InputRejectedError(PolicyDeskError):
    """A question or history was rejected by the input guard (too long, empty, malformed)."""


class ModelEndpointError(PolicyDeskError):
    """The configured chat or embedding endpoint could not be reached or returned an error."""


class StoreError(PolicyDeskError):
    """The SQLite store could not be opened or migrated, or a record (handoff, message) does not exist."""


class RecordNotFoundError(StoreError):
    """A conversation, message or handoff asked for does not exist (the store itself is fine)."""


class EvalSuiteError(PolicyDeskError):
    """An evaluation suite, run file or thresholds file is missing or malformed."""


class AuthError(PolicyDeskError):
    """A console user could not be added, removed or signed in (bad name, role, password or users file)."""
