"""The exceptions of the package: ApisimError, and ScenarioError for the scenario recorder
and player."""


class ApisimError(Exception):
    """Something apisim refused or could not do.

    `message` is apisim's own message when it gave one (the "error" member of a control API
    error body, or what the binary wrote to stderr), else ours; `status` is the HTTP status of
    a refused control request (None otherwise); `body` the raw response body, if any.
    """

    def __init__(self, text, message=None, status=None, body=None):
        super().__init__(text)
        self.message = message if message is not None else text
        self.status = status
        self.body = body


class ScenarioError(ApisimError, ValueError):
    """A multi-step scenario cannot be recorded or played as asked (apisim.claude.
    make_scenario_recorder / make_scenario_player): a missing directory, a step name that
    cannot name a cassette, no scenario.json, a command that cannot run. Raised before
    anything is written."""
