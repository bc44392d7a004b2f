"""The one exception type raised for user-facing data problems."""


class DataError(ValueError):
  """A data set cannot be loaded or used as configured.

  The message is always a single line that names the problem and says how to
  fix it, so command-line tools can print it as is (no traceback needed).
  Newlines in the message are folded into spaces.
  """

  def __init__(self, message):
    super().__init__(' '.join(str(message).split()))
